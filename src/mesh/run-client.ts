import type { PeerId, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { CopiesPlaced, MemberView, RemoteDispatch, RemoteFeed, RemoteStartOptions, RemoteUpdate } from '../node/remote.ts';
import { InvalidInputError, PeerError, type Run, type Workload } from '../spec/index.ts';
import type { BlobPool } from './blob-pool.ts';
import { JsonFrames, ProtocolError } from './frames.ts';
import type { MeshHost } from './host.ts';
import { KeptStreams } from './kept-streams.ts';
import type { PeerGuard } from './peer-guard.ts';
import { CANCEL_GRACE_MS, MAX_FRAME, readServer, RUN_PROTOCOL, type ClientFrame, type ServerFrame } from './run-protocol.ts';

export interface RemoteRunsOptions {
  /** Whether node `id` is a member of the mesh this node sees. */
  known: (id: string) => boolean;
  /** Other nodes to keep copies on, nearest first. */
  keepers: () => PeerId[];
  members: () => MemberView[];
  memberCount: () => number;
  rttOf: (id: string) => number | undefined;
  /** How long a stream is kept between runs to the same node (`mesh.keepRunStreamsMs`; 0: closed after each run). */
  keepStreamsMs: number;
}

/** Sends runs to other nodes and follows them: the requesting side of `/vmesh/run/2`. */
export class RemoteRuns implements RemoteDispatch {
  private readonly streams: KeptStreams;
  readonly members: () => MemberView[];
  readonly memberCount: () => number;
  readonly rttOf: (id: string) => number | undefined;

  constructor(
    private readonly host: MeshHost,
    private readonly pool: BlobPool,
    private readonly guard: PeerGuard,
    private readonly o: RemoteRunsOptions,
  ) {
    this.streams = new KeptStreams(o.keepStreamsMs);
    this.members = o.members;
    this.memberCount = o.memberCount;
    this.rttOf = o.rttOf;
  }

  /** Streams kept between runs, over all nodes. */
  get keptStreams(): number {
    return this.streams.size;
  }

  async start(target: string, id: string, workload: Workload, options: RemoteStartOptions = {}): Promise<RemoteFeed> {
    const { signal } = options;
    if (!this.o.known(target)) {
      throw new InvalidInputError(`placement.node: no node ${target} in this node's view of the mesh (vmesh nodes lists it)`, { field: 'placement.node' });
    }
    const request: ClientFrame = {
      type: 'run',
      id,
      workload,
      ...(options.mustFitNow === true ? { mustFitNow: true } : {}),
      ...(options.heartbeat === undefined ? {} : { heartbeatMs: options.heartbeat.everyMs }),
    };
    const { frames, accepted } = await this.ask(peerIdFromString(target), request, signal);
    const { stream } = frames;
    let grace: NodeJS.Timeout | undefined;
    let handedBack = false;
    const { guard, streams } = this;
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
            // Handed back before the last yield: a consumer that stops iterating at `end` never resumes us.
            handedBack = true;
            streams.keep(target, frames);
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
        // Left before its end (the follower gave up on it): the executing node hears it as the requester going away.
        if (!handedBack) stream.abort(new Error('the run was left before its end'));
      }
    })();
    return {
      node: target,
      updates,
      cancel: (reason) => {
        // Once handed back, the stream may carry another run: a cancel then would reach the wrong one.
        if (handedBack) return;
        void frames.write({ type: 'cancel', reason: reason.slice(0, 1024) }).catch(() => undefined);
        grace ??= setTimeout(() => stream.abort(new Error(`no end ${CANCEL_GRACE_MS} ms after the cancel`)), CANCEL_GRACE_MS);
      },
    };
  }

  /**
   * Sends the run request and reads the answer, on a kept stream to the node where there is one. A kept
   * stream that fails before the answer was closed by the node meanwhile (idle, restarted): the request
   * goes once more, on a new stream. The node refuses a run id it already holds, so it never runs twice.
   */
  private async ask(peer: PeerId, request: ClientFrame & { type: 'run' }, signal: AbortSignal | undefined): Promise<{ frames: JsonFrames<Stream>; accepted: Run }> {
    const target = peer.toString();
    for (let kept = this.streams.take(target); ; kept = undefined) {
      const frames = kept ?? new JsonFrames(await this.host.dialProtocol(peer, RUN_PROTOCOL, signal === undefined ? {} : { signal }), MAX_FRAME);
      try {
        await frames.write(request, signal);
        const answer = await frames.read(readServer, signal);
        if (answer.type === 'refused') {
          this.streams.keep(target, frames);
          throw new PeerError(answer.error, target);
        }
        if (answer.type !== 'accepted' || answer.run.id !== request.id) throw new ProtocolError(`answered a run request with ${answer.type}`);
        return { frames, accepted: answer.run };
      } catch (err) {
        if (err instanceof PeerError) throw err;
        frames.stream.abort(err as Error);
        if (kept !== undefined && !(err instanceof ProtocolError) && signal?.aborted !== true) continue;
        if (err instanceof ProtocolError) this.guard.offence(target, `${RUN_PROTOCOL}: ${err.message}`);
        throw err;
      }
    }
  }

  async fetchBlob(hash: string, hints: string[] = [], signal?: AbortSignal): Promise<void> {
    await this.pool.fetch(hash, { hints: hints.map((id) => peerIdFromString(id)), ...(signal === undefined ? {} : { signal }) });
  }

  keepCopies(hash: string, copies: number, signal?: AbortSignal): Promise<CopiesPlaced> {
    return this.pool.keepCopies(hash, copies, this.o.keepers(), signal);
  }

  /** Closes the streams kept between runs (the mesh is stopping). */
  close(): void {
    this.streams.closeAll();
  }
}
