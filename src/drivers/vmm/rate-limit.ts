/**
 * Firecracker's token bucket, which Cloud Hypervisor took over with the same fields: `size` tokens (bytes
 * or operations) refilled every `refill_time` ms, plus an optional `one_time_burst` spent first.
 */
export interface TokenBucket {
  size: number;
  one_time_burst?: number;
  refill_time: number;
}

/** An I/O rate limiter: a bytes bucket and an operations bucket, each optional. */
export interface RateLimiter {
  bandwidth?: TokenBucket;
  ops?: TokenBucket;
}

/**
 * The refill period of vmesh's buckets. Cloud Hypervisor's throttling docs advise more than its fixed
 * 100 ms cool-down once a bucket runs dry, or the rate falls short of size/refill_time; 200 ms keeps the
 * burst a guest can send at once to a fifth of a second's worth.
 */
export const REFILL_MS = 200;

/** A limiter for a disk held to `bps` bytes and `iops` operations per second; none when neither is set. */
export function diskLimiter(disk: { bps?: number; iops?: number } | undefined): RateLimiter | undefined {
  if (disk === undefined || (disk.bps === undefined && disk.iops === undefined)) return undefined;
  const bucket = (perSecond: number): TokenBucket => ({ size: Math.max(1, Math.round((perSecond * REFILL_MS) / 1000)), refill_time: REFILL_MS });
  return { ...(disk.bps === undefined ? {} : { bandwidth: bucket(disk.bps) }), ...(disk.iops === undefined ? {} : { ops: bucket(disk.iops) }) };
}

/** A bytes-per-second limiter for a bandwidth channel of `mbps` megabits per second; none for 0 (unlimited). */
export function bandwidthLimiter(mbps: number): RateLimiter | undefined {
  if (!(mbps > 0)) return undefined;
  const bytesPerSecond = (mbps * 1_000_000) / 8;
  return { bandwidth: { size: Math.max(1, Math.round((bytesPerSecond * REFILL_MS) / 1000)), refill_time: REFILL_MS } };
}
