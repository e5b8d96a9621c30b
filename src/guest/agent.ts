import { resolvConf } from '../net/nameservers.ts';
import { cpioArchive, type CpioEntry } from './cpio.ts';

/**
 * The in-guest agent: the initramfs's /init, a busybox shell script. It loads the virtio modules, runs the
 * command described by /vmesh (added per run as a second cpio archive), streams its stdout and stderr to
 * the console base64-encoded in `@vmesh:` frames, writes the declared outputs as a tar onto the outputs
 * disk (/dev/vda), reports the exit code and ends the VM: `reboot -f` by default (QEMU with `-no-reboot`
 * and Firecracker both end on a guest reset), `poweroff -f` when /vmesh/finish says so (Cloud Hypervisor
 * reboots a guest that resets, and ends on an ACPI power-off).
 *
 * Framing: the program's bytes only ever reach the console encoded, so nothing it prints can pass for a
 * frame. Frames are lines `@vmesh:<kind>:<payload>`: `o` and `e` (a base64 chunk of stdout / stderr),
 * `ready`, `exit:<code>`, `oom:<processes the guest kernel killed>`, `outputs` (the tar is on the disk), `log:<text>`. Anything else on the console (the kernel's
 * own lines) is not part of the run.
 */
export const AGENT_SCRIPT = `#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /tmp /run /out
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "@vmesh:$1"; }
for m in $(cat /vmesh/modules); do insmod "/lib/modules/$m.ko" 2>/dev/null || say "log:insmod $m failed"; done
# Input files ride in the run's archive under /in; a read-only bind keeps the workload from changing them.
if [ -d /in ]; then mount --bind /in /in && mount -o remount,bind,ro /in || say "log:could not make /in read-only"; fi
# A sandbox network: the guest's eth0 holds the sandbox address (set by /vmesh/net, absent without one).
[ -s /vmesh/net ] && { . /vmesh/net || say "log:the network could not be set up"; }
say ready
enc() { while :; do c=$(dd bs=3072 count=1 2>/dev/null | base64 -w 0); [ -z "$c" ] && break; say "$1:$c"; done; }
mkfifo /run/o /run/e
enc o < /run/o & po=$!
enc e < /run/e & pe=$!
oom() { sed -n 's/^oom_kill //p' /proc/vmstat; }
k0=$(oom)
(. /vmesh/env; cd "$(cat /vmesh/workdir)" && . /vmesh/command) < /vmesh/stdin > /run/o 2> /run/e
code=$?
wait $po $pe
k1=$(oom)
[ "\${k1:-0}" -gt "\${k0:-0}" ] && say "oom:$((k1 - k0))"
if [ -s /vmesh/outputs ]; then
  if [ -b /dev/vda ]; then
    (cd /out && . /vmesh/outputs) && say outputs || say "log:the outputs did not fit on their disk"
  else
    say "log:no outputs disk"
  fi
fi
say "exit:$code"
sync
# Never both: a VMM that reboots a guest on reset would run the command again. If the chosen way fails,
# init ends here and the guest kernel halts (a VMM that ends on neither leaves it to the run's timeout).
if [ "$(cat /vmesh/finish 2>/dev/null)" = poweroff ]; then poweroff -f; else reboot -f; fi
`;

/** A word for /bin/sh that stays exactly `s`: single-quoted, with each ' written as '\\''. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface RunInputs {
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  workdir: string;
  stdin?: string;
  /** Paths relative to /out, packed into the outputs tar. */
  outputs: readonly string[];
  /** Module names, in load order. */
  modules: readonly string[];
  /** Files placed read-only under /in: plain relative paths, checked by the node. */
  files?: ReadonlyArray<{ path: string; data: Uint8Array }>;
  /**
   * The guest's address on its sandbox network, and the gateway and name servers (its /etc/resolv.conf)
   * when it may send beyond its link.
   */
  network?: { address: string; prefixLength: number; gateway?: string; nameservers?: readonly string[] };
  /** How the agent ends the VM once the run is over (default `reboot`): what the VMM takes for "done". */
  finish?: GuestFinish;
}

export type GuestFinish = 'reboot' | 'poweroff';

/**
 * The per-run archive that rides on top of the guest image: /vmesh/{command,env,workdir,stdin,outputs,modules},
 * the input files under /in, and /etc/resolv.conf when the guest has name servers.
 * Every argument, variable and path is single-quoted for the agent's shell, so none is ever interpreted.
 */
export function runArchive(inputs: RunInputs): Buffer {
  const env = Object.entries(inputs.env).map(([k, v]) => `export ${k}=${shellQuote(v)}\n`).join('');
  const outputs =
    inputs.outputs.length === 0 ? '' : `tar -cf /dev/vda -- ${inputs.outputs.map(shellQuote).join(' ')} 2>/dev/null; sync\n`;
  const entries: CpioEntry[] = [
    { type: 'dir', name: 'vmesh' },
    { type: 'file', name: 'vmesh/command', data: `exec ${inputs.args.map(shellQuote).join(' ')}\n` },
    { type: 'file', name: 'vmesh/env', data: env },
    { type: 'file', name: 'vmesh/workdir', data: inputs.workdir },
    { type: 'file', name: 'vmesh/stdin', data: inputs.stdin ?? '' },
    { type: 'file', name: 'vmesh/outputs', data: outputs },
    { type: 'file', name: 'vmesh/modules', data: inputs.modules.join('\n') },
    { type: 'file', name: 'vmesh/net', data: networkScript(inputs.network) },
    { type: 'file', name: 'vmesh/finish', data: inputs.finish ?? 'reboot' },
  ];
  const nameservers = inputs.network?.nameservers ?? [];
  if (nameservers.length > 0) entries.push({ type: 'dir', name: 'etc', mode: 0o755 }, { type: 'file', name: 'etc/resolv.conf', data: resolvConf(nameservers), mode: 0o644 });
  const dirs = new Set<string>();
  for (const file of inputs.files ?? []) {
    const parts = `in/${file.path}`.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (!dirs.has(dir)) entries.push({ type: 'dir', name: dir, mode: 0o755 });
      dirs.add(dir);
    }
    entries.push({ type: 'file', name: `in/${file.path}`, data: file.data, mode: 0o444 });
  }
  return cpioArchive(entries);
}

/** The agent's network set-up: addresses are checked dotted quads, so nothing in them needs quoting. */
function networkScript(net: RunInputs['network']): string {
  if (net === undefined) return '';
  const ipv4 = /^(\d{1,3}\.){3}\d{1,3}$/;
  if (!ipv4.test(net.address) || (net.gateway !== undefined && !ipv4.test(net.gateway)) || !(net.prefixLength >= 0 && net.prefixLength <= 32)) {
    throw new Error(`not an IPv4 network: ${JSON.stringify(net)}`);
  }
  const lines = ['ip link set lo up', 'ip link set eth0 up', `ip addr add ${net.address}/${net.prefixLength} dev eth0`];
  if (net.gateway !== undefined) lines.push(`ip route add default via ${net.gateway}`);
  return `${lines.join(' && ')}\n`;
}
