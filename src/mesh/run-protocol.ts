import type { PeerId, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { RateLimiter } from '@libp2p/utils';
import type { Logger } from 'pino';
import Type, { type Static } from 'typebox';
import type { LogEvent, StateEvent } from '../node/events.ts';
import type { RemoteFeed, RemoteUpdate } from '../node/executor.ts';
import type { VmeshNode } from '../node/node.ts';
import { blobsOf, type CopiesPlaced, type MemberView, type RemoteDispatch, type RemoteStartOptions } from '../node/remote.ts';
import { InvalidInputError, isTerminal, isVmeshError, PeerError, Run, RunStateSchema, Workload, type Workload as WorkloadType } from '../spec/index.ts';
import { readSnapshotIndex } from '../snapshots/snapshots.ts';
import type { BlobPool } from './blob-pool.ts';
import { frameChecker, JsonFrames, ProtocolError } from './frames.ts';
import type { MeshHost } from './host.ts';
import type { PeerGuard } from './peer-guard.ts';

export const RUN_PROTOCOL = '/vmesh/run/1';
/** Requests carry inline data up to 256 KiB (larger goes by blob); log chunks are split to fit. */
const MAX_FRAME = 2 * 2 ** 20;
const LOG_PIECE = 512 * 1024;
/** Runs a peer may ask this node for, per second. */
const RUNS_PER_SECOND = 200;
/** After a cancel, how long the executing node has to report the end before contact counts as lost. */
const CANCEL_GRACE_MS = 15_000;

const RUN_ID = '^r[0-9a-z]{9}[0-9a-f]{12}$';
const ErrorShape = Type.Object(
  { code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 8192 }), status: Type.Integer({ minimum: 400, maximum: 599 }), field: Type.Optional(Type.String({ maxLength: 256 })) },
  { additionalProperties: false },
);

const ClientFrame = Type.Union([
  Type.Object(
    {
      type: Type.Literal('run'),
      id: Type.String({ pattern: RUN_ID }),
      workload: Workload,
      /** Placed by the requester: refuse (no_room) rather than queue when the run does not fit now. */
      mustFitNow: Type.Optional(Type.Boolean()),
      /** Send a `beat` this often while the run lives, so that the requester can tell a silent node from a quiet run. */
      heartbeatMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000 })),
    },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('cancel'), reason: Type.String({ maxLength: 1024 }) }, { additionalProperties: false }),
]);
const ServerFrame = Type.Union([
  Type.Object({ type: Type.Literal('accepted'), run: Run }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('refused'), error: ErrorShape }, { additionalProperties: false }),
  Type.Object(
    {
      type: Type.Literal('state'),
      state: RunStateSchema,
      reason: Type.Optional(Type.String({ maxLength: 8192 })),
      driver: Type.Optional(Type.String({ maxLength: 64 })),
      startedAt: Type.Optional(Type.String({ maxLength: 40 })),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    { type: Type.Literal('log'), stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr')]), data: Type.String({ maxLength: Math.ceil(LOG_PIECE / 3) * 4 }), ts: Type.String({ maxLength: 40 }) },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('end'), run: Run }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('beat'), queuePosition: Type.Optional(Type.Integer({ minimum: 1 })) }, { additionalProperties: false }),
]);
const readClient = frameChecker(ClientFrame, 'frame');
const readServer = frameChecker(ServerFrame, 'frame');
type ServerFrame = Static<typeof ServerFrame>;

function errorShape(err: unknown): Static<typeof ErrorShape> {
  if (isVmeshError(err)) return { code: err.code, message: err.message.slice(0, 8192), status: err.status, ...(err.field === undefined ? {} : { field: err.field }) };
  return { code: 'internal', message: (err as Error).message.slice(0, 8192), status: 500 };
}

/**
 * Executes runs other nodes send on `/vmesh/run/1`. The requester sends one `run` frame (and maybe a
 * `cancel` later); this node fetches the blobs the spec names (from the requester first), submits the
 * run under the requester's run id, answers `accepted` or `refused`, then streams its states and logs,
 * and `end` with the finished run. If the requester goes away, the run is cancelled: nobody is left to
 * take its result.
 */
export async function serveRuns(host: MeshHost, node: VmeshNode, pool: BlobPool, guard: PeerGuard, logger: Logger): Promise<void> {
  const limiter = new RateLimiter({ points: RUNS_PER_SECOND, duration: 1 });
  await host.handle(
    RUN_PROTOCOL,
    async (stream, connection) => {
      const peer = connection.remotePeer;
      const frames = new JsonFrames(stream, MAX_FRAME);
      let runId: string | undefined;
      let ended = false;
      try {
        const first = await frames.read(readClient, AbortSignal.timeout(30_000));
        if (first.type !== 'run') throw new ProtocolError('the first frame must be a run');
        runId = first.id;
        const id = first.id;
        try {
          limiter.consume(peer.toString());
        } catch {
          await frames.write({ type: 'refused', error: { code: 'rate_limited', message: `more than ${RUNS_PER_SECOND} runs a second from one node`, status: 429 } });
          return void (await stream.close());
        }
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
        const onState = (e: StateEvent) => {
          if (e.runId !== id) return;
          if (isTerminal(e.state)) {
            ended = true;
            relay({ type: 'end', run: node.getRun(id) });
            return;
          }
          const frame: ServerFrame = { type: 'state', state: e.state, ...(e.reason === undefined ? {} : { reason: e.reason.slice(0, 8192) }) };
          if (e.run?.driver !== undefined) frame.driver = e.run.driver;
          if (e.run?.startedAt !== undefined) frame.startedAt = e.run.startedAt;
          relay(frame);
        };
        const onLog = (e: LogEvent) => {
          if (e.runId !== id) return;
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
            await fetchBlobs(first.workload, pool, peer, holds);
            // Runs here whatever its placement hints say: the requester placed it on this node.
            run = await node.submitValid(first.workload, { id, local: true, requester: peer.toString(), mustFitNow: first.mustFitNow === true });
          } catch (err) {
            await frames.write({ type: 'refused', error: errorShape(err) });
            return void (await stream.close());
          } finally {
            // The run holds its blobs itself once submitted.
            for (const release of holds) release();
          }
          accepted = true;
          send({ type: 'accepted', run });
          for (const f of held.splice(0)) send(f);
          if (first.heartbeatMs !== undefined) {
            beat = setInterval(() => {
              if (ended) return;
              const queuePosition = node.executor.position(id);
              send(queuePosition === undefined ? { type: 'beat' } : { type: 'beat', queuePosition });
            }, first.heartbeatMs);
            beat.unref();
          }
          // The requester's side: a cancel, or the end of its stream.
          void (async () => {
            try {
              for (;;) {
                const f = await frames.read(readClient);
                if (f.type === 'cancel') node.cancel(id);
              }
            } catch (err) {
              if (err instanceof ProtocolError) guard.offence(peer.toString(), `${RUN_PROTOCOL}: ${err.message}`);
              if (!ended) {
                logger.info({ runId: id, peer: peer.toString() }, 'the node that asked for a run went away: cancelling it');
                try {
                  node.cancel(id);
                } catch {
                  // it ended meanwhile
                }
              }
            }
          })();
          await node.waitFor(id);
          await chain;
          await stream.close();
        } finally {
          clearInterval(beat);
          node.events.off('state', onState);
          node.events.off('log', onLog);
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

/**
 * Fetches every blob the workload names that this node lacks, asking the requester first; a snapshot's
 * files through its (checked) index. Each is held from eviction (releases pushed onto `holds`), so a
 * later fetch cannot evict an earlier one.
 */
async function fetchBlobs(workload: WorkloadType, pool: BlobPool, requester: PeerId, holds: Array<() => void>): Promise<void> {
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

/** Sends runs to other nodes and follows them: the requesting side of `/vmesh/run/1`. */
export class RemoteRuns implements RemoteDispatch {
  constructor(
    private readonly host: MeshHost,
    private readonly pool: BlobPool,
    private readonly guard: PeerGuard,
    private readonly known: (id: string) => boolean,
    /** Other nodes to keep copies on, nearest first. */
    private readonly keepers: () => PeerId[],
    readonly members: () => MemberView[],
    readonly memberCount: () => number,
  ) {}

  async start(target: string, id: string, workload: WorkloadType, options: RemoteStartOptions = {}): Promise<RemoteFeed> {
    const { signal } = options;
    if (!this.known(target)) {
      throw new InvalidInputError(`placement.node: no node ${target} in this node's view of the mesh (vmesh nodes lists it)`, { field: 'placement.node' });
    }
    const peer = peerIdFromString(target);
    const stream: Stream = await this.host.dialProtocol(peer, RUN_PROTOCOL, signal === undefined ? {} : { signal });
    const frames = new JsonFrames(stream, MAX_FRAME);
    let accepted: Run;
    try {
      await frames.write(
        { type: 'run', id, workload, ...(options.mustFitNow === true ? { mustFitNow: true } : {}), ...(options.heartbeat === undefined ? {} : { heartbeatMs: options.heartbeat.everyMs }) },
        signal,
      );
      const answer = await frames.read(readServer, signal);
      if (answer.type === 'refused') throw new PeerError(answer.error, target);
      if (answer.type !== 'accepted' || answer.run.id !== id) throw new ProtocolError(`answered a run request with ${answer.type}`);
      accepted = answer.run;
    } catch (err) {
      if (err instanceof ProtocolError) this.guard.offence(target, `${RUN_PROTOCOL}: ${err.message}`);
      stream.abort(err as Error);
      throw err;
    }
    let grace: NodeJS.Timeout | undefined;
    const guard = this.guard;
    const heartbeat = options.heartbeat;
    let position = accepted.queuePosition;
    const updates = (async function* (): AsyncGenerator<RemoteUpdate> {
      try {
        if (position !== undefined) yield { type: 'position', position };
        for (;;) {
          // A node that says nothing (no frame, not even a beat) for the timeout is taken for gone.
          const quiet = heartbeat === undefined ? undefined : AbortSignal.timeout(heartbeat.timeoutMs);
          let f: ServerFrame;
          try {
            f = await frames.read(readServer, quiet);
          } catch (err) {
            if (quiet?.aborted === true) throw new Error(`no word from node ${target} for ${heartbeat!.timeoutMs} ms`);
            throw err;
          }
          if (f.type === 'beat') {
            if (f.queuePosition !== position) yield { type: 'position', position: (position = f.queuePosition) };
            continue;
          }
          if (f.type === 'log') yield { type: 'log', stream: f.stream, data: Buffer.from(f.data, 'base64'), ts: f.ts };
          else if (f.type === 'state') {
            const patch: RemoteUpdate & { type: 'state' } = { type: 'state', state: f.state, patch: {} };
            if (f.reason !== undefined) patch.patch.reason = f.reason;
            if (f.driver !== undefined) patch.patch.driver = f.driver;
            if (f.startedAt !== undefined) patch.patch.startedAt = f.startedAt;
            yield patch;
          } else if (f.type === 'end') {
            if (f.run.id !== id) throw new ProtocolError(`ended run ${f.run.id}, not ${id}`);
            // Closed before the last yield: a consumer that stops iterating at `end` never resumes us.
            await stream.close().catch(() => undefined);
            yield { type: 'end', run: { ...f.run, nodeId: target } };
            return;
          } else throw new ProtocolError(`sent ${f.type} in the middle of a run`);
        }
      } catch (err) {
        if (err instanceof ProtocolError) guard.offence(target, `${RUN_PROTOCOL}: ${err.message}`);
        stream.abort(err as Error);
        throw err;
      } finally {
        clearTimeout(grace);
      }
    })();
    return {
      node: target,
      updates,
      cancel: (reason) => {
        void frames.write({ type: 'cancel', reason: reason.slice(0, 1024) }).catch(() => undefined);
        grace ??= setTimeout(() => stream.abort(new Error(`no end ${CANCEL_GRACE_MS} ms after the cancel`)), CANCEL_GRACE_MS);
      },
    };
  }

  async fetchBlob(hash: string, hints: string[] = [], signal?: AbortSignal): Promise<void> {
    await this.pool.fetch(hash, { hints: hints.map((id) => peerIdFromString(id)), ...(signal === undefined ? {} : { signal }) });
  }

  keepCopies(hash: string, copies: number, signal?: AbortSignal): Promise<CopiesPlaced> {
    return this.pool.keepCopies(hash, copies, this.keepers(), signal);
  }
}
