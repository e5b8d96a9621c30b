/**
 * Addresses for sandbox links: a pool of /30 subnets carved from one private range. In each subnet the
 * host end of the link takes the first address and the sandbox the second. Which subnets are taken is
 * kept by a LeaseStore (the node's SQLite store), so that a restarted node does not hand out an
 * address that a leftover link still holds.
 */
export interface LeaseStore {
  /** Records the lease; false when the subnet is already leased. */
  claimLease(subnet: string, owner: string): boolean;
  releaseLeases(owner: string): void;
  releaseAllLeases(): void;
  leasedSubnets(): Set<string>;
}

export interface Link {
  subnet: string;
  hostAddress: string;
  sandboxAddress: string;
  prefixLength: 30;
}

export class AddressPoolExhaustedError extends Error {
  constructor(range: string) {
    super(`every /30 of ${range} is leased`);
    this.name = 'AddressPoolExhaustedError';
  }
}

function toInt(ip: string): number {
  return ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

function toIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

export class AddressPool {
  private readonly base: number;
  private readonly size: number;
  private next = 0;

  /** `range` is an IPv4 CIDR, e.g. `10.89.0.0/16`. */
  constructor(
    readonly range: string,
    private readonly leases: LeaseStore,
  ) {
    const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(range);
    const bits = m === null ? NaN : Number(m[2]);
    if (m === null || bits > 30 || bits < 8 || m[1]!.split('.').some((o) => Number(o) > 255)) {
      throw new Error(`address range ${JSON.stringify(range)} is not an IPv4 CIDR between /8 and /30`);
    }
    this.size = 2 ** (32 - bits) / 4;
    this.base = toInt(m[1]!) - (toInt(m[1]!) % (this.size * 4));
  }

  /** Leases the next free /30 to `owner`. */
  lease(owner: string): Link {
    const taken = this.leases.leasedSubnets();
    for (let i = 0; i < this.size; i++) {
      const index = (this.next + i) % this.size;
      const start = this.base + index * 4;
      const subnet = `${toIp(start)}/30`;
      if (taken.has(subnet) || !this.leases.claimLease(subnet, owner)) continue;
      this.next = (index + 1) % this.size;
      return { subnet, hostAddress: toIp(start + 1), sandboxAddress: toIp(start + 2), prefixLength: 30 };
    }
    throw new AddressPoolExhaustedError(this.range);
  }

  release(owner: string): void {
    this.leases.releaseLeases(owner);
  }

  /** Frees every lease: for a node starting up, when no sandbox of a previous process can be alive. */
  releaseAll(): void {
    this.leases.releaseAllLeases();
  }
}
