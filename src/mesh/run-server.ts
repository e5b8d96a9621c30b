import type { PeerId, Stream } from '@libp2p/interface';
import { RateLimiter } from '@libp2p/utils';
import type { Logger } from 'pino';
import type { LogEvent, StateEvent } from '../node/events.ts';
import type { VmeshNode } from '../node/node.ts';
import { blobsOf } from '../node/remote.ts';
import { isTerminal, type Run, type Workload } from '../spec/index.ts';
import { readSnapshotIndex } from '../snapshots/snapshots.ts';
import type { BlobPool } from './blob-pool.ts';
import { JsonFrames, ProtocolError } from './frames.ts';
import type { MeshHost } from './host.ts';
import type { PeerGuard } from './peer-guard.ts';
import { errorShape, LOG_PIECE, MAX_FRAME, readClient, RUN_PROTOCOL, RUNS_PER_SECOND, SERVER_IDLE_MS, type ClientFrame, type ServerFrame } from './run-protocol.ts';

type RunRequest = Extract<ClientFrame, { type: 'run' }>;

interface Served {
  node: VmeshNode;
  pool: BlobPool;
  peer: PeerId;
  logger: Logger;
  stateBatchMs: number;
}

/**
 * Executes runs other nodes send on `/vmesh/run/2`, one after another on each stream. For each `run`
 * frame this node fetches the blobs the spec names (from the requester first), submits the run under the
 * requester's run id, answers `accepted` or `refused`, then streams its states and logs, and `end` with
 * the finished run; then it waits for the stream's next run. If the requester goes away during a run, the
 * run is cancelled: nobody is left to take its result. A stream that waits SERVER_IDLE_MS for a run is
 * closed.
 *
 * `stateBatchMs` (`mesh.stateBatchMs`): a run's state changes are held this long after the first of them,
 * then sent together, in order; a run that ends sooner sends only its end (the requester walks through
 * the states it did not hear), which spares both nodes three frames of a short run.
 */
export async function serveRuns(host: MeshHost, node: VmeshNode, pool: BlobPool, guard: PeerGuard, logger: Logger, stateBatchMs: number): Promise<void> {
  const limiter = new RateLimiter({ points: RUNS_PER_SECOND, duration: 1 });
  await host.handle(
    RUN_PROTOCOL,
    async (stream, connection) => {
      const peer = connection.remotePeer;
      const requester = new RequesterFrames(new JsonFrames(stream, MAX_FRAME));
      let runId: string | undefined;
      try {
        for (;;) {
          const frame = await requester.nextWithin(SERVER_IDLE_MS);
          if (frame === 'idle') return stream.abort(new Error(`no run for ${SERVER_IDLE_MS / 1000} s`));
          if (frame === undefined) return void (await stream.close());
          // A cancel that crossed the end of the run it was meant for.
          if (frame.type === 'cancel') continue;
          runId = frame.id;
          try {
            limiter.consume(peer.toString());
          } catch {
            await requester.frames.write({ type: 'refused', error: { code: 'rate_limited', message: `more than ${RUNS_PER_SECOND} runs a second from one node`, status: 429 } });
            continue;
          }
          await serveRun(frame, requester, { node, pool, peer, logger, stateBatchMs });
        }
      } catch (err) {
        if (err instanceof ProtocolError) guard.offence(peer.toString(), `${RUN_PROTOCOL}: ${err.message}`);
        else logger.debug({ err, runId, peer: peer.toString() }, 'remote run stream ended early');
        stream.abort(err as Error);
      }
    },
    { maxInboundStreams: 1024 },
  );
}

/** One run on a stream, from its request to its `end` frame, written. Throws when the stream fails. */
async function serveRun(request: RunRequest, requester: RequesterFrames, { node, pool, peer, logger, stateBatchMs }: Served): Promise<void> {
  const { id } = request;
  const { frames } = requester;
  let ended = false;
  // Frames go out in order, one at a time; the events of the run are relayed from the moment it is submitted.
  let chain = Promise.resolve();
  const send = (frame: ServerFrame) => {
    chain = chain.then(() => frames.write(frame)).catch((err: Error) => {
      if (!ended) node.cancel(id);
      throw err;
    });
  };
  let accepted = false;
  let beat: NodeJS.Timeout | undefined;
  const held: ServerFrame[] = [];
  const relay = (frame: ServerFrame) => (accepted ? send(frame) : held.push(frame));
  // State changes not sent yet, and when they go (stateBatchMs after the first of them), in order.
  const changes: ServerFrame[] = [];
  let stateTimer: NodeJS.Timeout | undefined;
  const sendChanges = () => {
    clearTimeout(stateTimer);
    stateTimer = undefined;
    for (const frame of changes.splice(0)) relay(frame);
  };
  const onState = (e: StateEvent) => {
    if (e.runId !== id) return;
    if (isTerminal(e.state)) {
      ended = true;
      clearTimeout(stateTimer);
      changes.length = 0;
      relay({ type: 'end', run: e.run === undefined ? node.getRun(id) : node.toPublic(e.run) });
      return;
    }
    const frame: ServerFrame = { type: 'state', state: e.state, ...(e.reason === undefined ? {} : { reason: e.reason.slice(0, 8192) }) };
    if (e.run?.driver !== undefined) frame.driver = e.run.driver;
    if (e.run?.startedAt !== undefined) frame.startedAt = e.run.startedAt;
    changes.push(frame);
    stateTimer ??= setTimeout(sendChanges, stateBatchMs);
  };
  const onLog = (e: LogEvent) => {
    if (e.runId !== id) return;
    // What the run prints comes after the state it printed in.
    sendChanges();
    for (let at = 0; at < e.data.byteLength; at += LOG_PIECE) {
      relay({ type: 'log', stream: e.stream, data: Buffer.from(e.data.subarray(at, at + LOG_PIECE)).toString('base64'), ts: e.ts });
    }
  };
  node.events.on('state', onState);
  node.events.on('log', onLog);
  try {
    let run: Run;
    const holds: Array<() => void> = [];
    try {
      await fetchBlobs(request.workload, pool, peer, holds);
      // Runs here whatever its placement hints say: the requester placed it on this node.
      run = await node.submitValid(request.workload, { id, local: true, requester: peer.toString(), mustFitNow: request.mustFitNow === true });
    } catch (err) {
      await frames.write({ type: 'refused', error: errorShape(err) });
      return;
    } finally {
      // The run holds its blobs itself once submitted.
      for (const release of holds) release();
    }
    accepted = true;
    send({ type: 'accepted', run });
    for (const f of held.splice(0)) send(f);
    if (request.heartbeatMs !== undefined) {
      beat = setInterval(() => {
        if (ended) return;
        const queuePosition = node.executor.position(id);
        send(queuePosition === undefined ? { type: 'beat' } : { type: 'beat', queuePosition });
      }, request.heartbeatMs);
      beat.unref();
    }
    await followRequester(id, requester, { node, logger, peer, ended: () => ended });
    await chain;
  } finally {
    clearInterval(beat);
    clearTimeout(stateTimer);
    // Left early (the requester went away): a write still under way fails with the stream, and the run
    // was cancelled for it already; nobody awaits the chain any more.
    chain.catch(() => undefined);
    node.events.off('state', onState);
    node.events.off('log', onLog);
  }
}

/**
 * The requester's side while run `id` lives: a cancel, or the end of its stream (it went away: the run is
 * cancelled, and the stream fails). Returns once the run is over; a frame read after that is the stream's.
 */
async function followRequester(
  id: string,
  requester: RequesterFrames,
  { node, logger, peer, ended }: { node: VmeshNode; logger: Logger; peer: PeerId; ended: () => boolean },
): Promise<void> {
  const over = node.waitFor(id).then(() => 'over' as const);
  try {
    for (;;) {
      if ((await Promise.race([over, requester.arrived()])) === 'over') return;
      const frame = await requester.next();
      if (frame === undefined) throw new Error('the requester closed the stream during the run');
      if (frame.type === 'run') throw new ProtocolError(`sent run ${frame.id} while run ${id} was live on the same stream`);
      node.cancel(id);
    }
  } catch (err) {
    if (!ended()) {
      logger.info({ runId: id, peer: peer.toString() }, 'the node that asked for a run went away: cancelling it');
      try {
        node.cancel(id);
      } catch {
        // it ended meanwhile
      }
    }
    throw err;
  }
}

/**
 * The requester's frames, read one at a time. A read can outlive the run it waited in (the run ended
 * first): it is kept, and its frame is the next one taken.
 */
class RequesterFrames {
  private pending: Promise<ClientFrame | undefined> | undefined;

  constructor(readonly frames: JsonFrames<Stream>) {}

  /** Settles once the next frame, or the end of the stream, has arrived, without taking it. */
  arrived(): Promise<unknown> {
    if (this.pending === undefined) {
      this.pending = this.read();
      // Awaited by whoever takes it; a stream given up between frames must not leave it unhandled.
      this.pending.catch(() => undefined);
    }
    return this.pending;
  }

  /** The next frame; undefined where the requester closed the stream between frames. */
  next(): Promise<ClientFrame | undefined> {
    const frame = this.arrived() as Promise<ClientFrame | undefined>;
    this.pending = undefined;
    return frame;
  }

  /** The next frame, or 'idle' when none came within `ms`. */
  async nextWithin(ms: number): Promise<ClientFrame | undefined | 'idle'> {
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<'idle'>((resolve) => (timer = setTimeout(() => resolve('idle'), ms)));
    try {
      return (await Promise.race([this.arrived(), idle])) === 'idle' ? 'idle' : await this.next();
    } finally {
      clearTimeout(timer);
    }
  }

  private async read(): Promise<ClientFrame | undefined> {
    try {
      return await this.frames.read(readClient);
    } catch (err) {
      // The requester closed its side where a frame could begin: no more runs on this stream.
      const { stream } = this.frames;
      if ((err as Error).name === 'UnexpectedEOFError' && stream.remoteWriteStatus === 'closed' && stream.status === 'open') return undefined;
      throw err;
    }
  }
}

/**
 * Fetches every blob the workload names that this node lacks, asking the requester first; a snapshot's
 * files through its (checked) index. Each is held from eviction (releases pushed onto `holds`), so a
 * later fetch cannot evict an earlier one.
 */
async function fetchBlobs(workload: Workload, pool: BlobPool, requester: PeerId, holds: Array<() => void>): Promise<void> {
  const fetchAll = async (hashes: string[]) => {
    holds.push(await pool.blobs.hold(hashes));
    for (const hash of hashes) await pool.fetch(hash, { hints: [requester] });
  };
  await fetchAll(blobsOf(workload));
  if ('snapshot' in workload.source) {
    const index = await readSnapshotIndex(workload.source.snapshot, pool.blobs);
    await fetchAll(Object.values(index.files));
  }
}
