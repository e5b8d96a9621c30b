import type { Command } from 'commander';
import path from 'node:path';
import { defaultGuestCache, ensureGuestImage } from '../../guest/image.ts';
import type { GlobalOptions } from '../connect.ts';
import { printJson } from '../format.ts';

/**
 * `vmesh image build`: builds (or finds) the default microVM guest image in the shared cache, here on
 * this machine, showing each step as it goes. Nodes of the same user find it there on their first
 * microVM run instead of building it then.
 */
export function imageCommands(program: Command): void {
  const image = program.command('image').description('the default microVM guest image (kernel and initramfs)');
  image
    .command('build')
    .description("build the default guest image into the shared cache (Debian's kernel via apt-get download, busybox, the agent)")
    .option('--refresh', 'ask apt for the current kernel package again (a newer kernel makes a new image)')
    .option('--cache <dir>', 'the guest cache (default: $XDG_CACHE_HOME/vmesh/guest, else ~/.cache/vmesh/guest)')
    .action(async (opts: { refresh?: boolean; cache?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const started = performance.now();
      const elapsed = () => `${((performance.now() - started) / 1000).toFixed(1)}s`;
      const controller = new AbortController();
      const onInterrupt = () => controller.abort(new Error('interrupted'));
      process.once('SIGINT', onInterrupt);
      try {
        const built = await ensureGuestImage({
          cacheDir: path.resolve(opts.cache ?? defaultGuestCache()),
          signal: controller.signal,
          progress: (message) => process.stderr.write(`[${elapsed()}] ${message}\n`),
          ...(opts.refresh ? { refresh: true } : {}),
        });
        if (global.json) printJson({ ...built, seconds: Number(elapsed().slice(0, -1)) });
        else process.stdout.write(`${built.key}\nkernel ${built.kernelRelease}: ${built.kernel}\n${built.vmlinux === undefined ? '' : `unpacked: ${built.vmlinux}\n`}initramfs: ${built.initrd}\n`);
      } finally {
        process.off('SIGINT', onInterrupt);
      }
    });
}
