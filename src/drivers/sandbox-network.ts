import type { NetworkManager, SandboxNetworkSpec } from '../net/sandbox-network.ts';
import { InvalidInputError } from '../spec/index.ts';
import type { SandboxRequest } from './driver.ts';

/**
 * Whether a sandbox needs a network of its own (egress beyond none, or published ports); refuses, naming
 * the field, when it does and this node has no sandbox networking.
 */
export function wantsNetwork(request: SandboxRequest, networks: NetworkManager | undefined): boolean {
  const policy = request.workload.network;
  const wants = (policy?.egress ?? 'none') !== 'none' || (policy?.ports?.length ?? 0) > 0;
  if (wants && networks === undefined) {
    const field = (policy?.ports?.length ?? 0) > 0 ? 'network.ports' : 'network.egress';
    throw new InvalidInputError(`${field}: this node has no sandbox networking (it needs root, iproute2 and nftables)`, { field });
  }
  return wants;
}

/** What the network manager makes for a request: its egress policy, published ports and bandwidth channel. */
export function networkSpec(request: SandboxRequest): SandboxNetworkSpec {
  const { egressMbps, ingressMbps } = request.resources.network;
  const policy = request.workload.network ?? {};
  return { owner: request.runId, egress: policy.egress ?? 'none', egressMbps, ingressMbps, ...(policy.ports === undefined ? {} : { ports: policy.ports }) };
}
