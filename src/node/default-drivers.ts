import path from 'node:path';
import { CloudHypervisorDriver } from '../drivers/cloud-hypervisor/driver.ts';
import type { Driver } from '../drivers/driver.ts';
import { FirecrackerDriver } from '../drivers/firecracker/driver.ts';
import { NanosDriver } from '../drivers/nanos/driver.ts';
import { OciDriver } from '../drivers/oci/driver.ts';
import { QemuDriver } from '../drivers/qemu/driver.ts';
import { QuickJsDriver } from '../drivers/quickjs/driver.ts';
import { WasmDriver } from '../drivers/wasm/driver.ts';
import type { NetworkManager } from '../net/sandbox-network.ts';
import { shortTag } from '../util/names.ts';
import type { NodeConfig } from './config.ts';

/** What the node hands its drivers when it makes them. */
export interface DriverContext {
  nodeId: string;
  config: NodeConfig;
  /** Parent of per-run sandbox directories. */
  sandboxRoot: string;
  /** Sandbox networking, when this host has it. */
  networks: NetworkManager | undefined;
}

/** The drivers a node has unless told otherwise (the registry orders them by `drivers.preference`). */
export function defaultDrivers({ nodeId, config, sandboxRoot, networks }: DriverContext): Driver[] {
  const options = {
    sandboxRoot,
    workers: config.workers,
    workerIdleTimeoutMs: config.workerIdleMs,
  };
  const qemu = new QemuDriver({ sandboxRoot, ...(networks === undefined ? {} : { networks }) });
  return [
    new WasmDriver(options),
    new QuickJsDriver(options),
    new OciDriver({
      sandboxRoot,
      stateDir: path.join(config.home, 'oci-state'),
      imageRoot: path.join(config.home, 'image-cache'),
      cgroupParent: `/vmesh/${shortTag(nodeId)}`,
      ...config.drivers.oci,
      ...(networks === undefined ? {} : { networks }),
    }),
    new FirecrackerDriver({ sandboxRoot, ...config.drivers.firecracker, ...(networks === undefined ? {} : { networks }) }),
    new CloudHypervisorDriver({ sandboxRoot, ...config.drivers.cloudHypervisor, ...(networks === undefined ? {} : { networks }) }),
    qemu,
    // The unikernel's QEMU takes the accelerator the QEMU driver found to boot here.
    new NanosDriver({ sandboxRoot, ...config.drivers.nanos, accel: () => qemu.accelerator, ...(networks === undefined ? {} : { networks }) }),
  ];
}
