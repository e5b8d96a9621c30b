export interface RttEstimate {
  /** Smoothed round-trip time in milliseconds (EWMA of the samples). */
  rttMs: number;
  /** The newest sample. */
  lastMs: number;
  samples: number;
  /** Local clock (ms since the epoch) of the newest sample. */
  measuredAt: number;
}

/**
 * Round-trip times to peers, smoothed with an exponentially weighted moving average so that one slow
 * ping moves the estimate by `alpha` of the difference.
 */
export class Proximity {
  private readonly estimates = new Map<string, RttEstimate>();

  constructor(
    private readonly alpha = 0.25,
    private readonly now: () => number = Date.now,
  ) {}

  record(peer: string, ms: number): RttEstimate {
    const held = this.estimates.get(peer);
    const at = this.now();
    const next: RttEstimate =
      held === undefined
        ? { rttMs: ms, lastMs: ms, samples: 1, measuredAt: at }
        : { rttMs: held.rttMs + this.alpha * (ms - held.rttMs), lastMs: ms, samples: held.samples + 1, measuredAt: at };
    this.estimates.set(peer, next);
    return next;
  }

  get(peer: string): RttEstimate | undefined {
    return this.estimates.get(peer);
  }

  forget(peer: string): void {
    this.estimates.delete(peer);
  }
}
