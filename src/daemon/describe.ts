import type { NodeDescription } from '../mesh/mesh.ts';
import type { VmeshNode } from '../node/node.ts';

/** What a node puts in its adverts. */
export function describeNode(node: VmeshNode): NodeDescription {
  const info = node.info();
  return {
    version: info.version,
    drivers: info.drivers.map((d) => ({
      name: d.name,
      kinds: d.kinds as NodeDescription['drivers'][number]['kinds'],
      isolation: d.isolation,
      available: d.probe.available,
      ...(d.probe.version === undefined ? {} : { version: d.probe.version.slice(0, 128) }),
    })),
    capacity: info.capacity,
    free: info.free,
    runs: info.runs,
  };
}
