export interface RttEstimate {
  /** Smoothed round-trip time in milliseconds (EWMA of the samples). */
  rttMs: number;
  /**
   * The lowest of the last `window` samples: the path's own latency. A busy machine only ever adds to
   * a round trip (a queued frame, a late event loop), so the floor is the distance, the EWMA the
   * distance plus what load adds now.
   */
  minMs: number;
  /** The newest sample. */
  lastMs: number;
  samples: number;
  /** Local clock (ms since the epoch) of the newest sample. */
  measuredAt: number;
}

interface Held {
  estimate: RttEstimate;
  /** The last `window` samples, oldest first. */
  recent: number[];
}

/**
 * Round-trip times to peers: an exponentially weighted moving average, so that one slow ping moves
 * the estimate by `alpha` of the difference, and the minimum over a sliding window of samples.
 */
export class Proximity {
  private readonly held = new Map<string, Held>();

  constructor(
    private readonly alpha = 0.25,
    private readonly window = 10,
    private readonly now: () => number = Date.now,
  ) {}

  record(peer: string, ms: number): RttEstimate {
    const held = this.held.get(peer);
    const recent = [...(held?.recent ?? []), ms].slice(-this.window);
    const rttMs = held === undefined ? ms : held.estimate.rttMs + this.alpha * (ms - held.estimate.rttMs);
    const estimate: RttEstimate = { rttMs, minMs: Math.min(...recent), lastMs: ms, samples: (held?.estimate.samples ?? 0) + 1, measuredAt: this.now() };
    this.held.set(peer, { estimate, recent });
    return estimate;
  }

  get(peer: string): RttEstimate | undefined {
    return this.held.get(peer)?.estimate;
  }

  /**
   * Up to `n` of `peers` to measure next: those never measured first, then those measured longest ago.
   * A node measures a few peers a round rather than all of them, so that what it spends on pings does not
   * grow with the mesh; each peer's turn comes every ceil(peers / n) rounds.
   */
  stalest(peers: readonly string[], n: number): string[] {
    const age = (peer: string) => this.held.get(peer)?.estimate.measuredAt ?? 0; // never: before any clock reading
    return [...peers].sort((a, b) => age(a) - age(b)).slice(0, n);
  }

  forget(peer: string): void {
    this.held.delete(peer);
  }
}
