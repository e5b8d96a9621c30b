import {
  explain,
  PlacementView,
  placementRequest,
  requestPolicy,
  seedOf,
  type Candidate,
  type PlacementExplanation,
  type PlacementPolicy,
  type PlacementRequest,
} from '../placement/index.ts';
import { InvalidInputError, isVmeshError, NoNodeFitsError, type Run, type RunPlacement, type Workload } from '../spec/index.ts';
import type { RunRecord } from '../store/store.ts';
import { canonicalHash } from '../trust/canonical.ts';
import type { CombinedReputation } from '../trust/reports.ts';
import { latencyOutcome, type Outcome } from '../trust/reputation.ts';
import { spotCheckRate } from '../trust/spot-check.ts';
import { resolveResources } from './config.ts';
import type { RemoteFeed } from './remote.ts';
import { failoverFeed } from './failover.ts';
import type { VmeshNode } from './node.ts';
import { blobsOf, receiptChecked, remoteSpec, type RemoteDispatch } from './remote.ts';
import { newRunId } from './run-id.ts';
import type { SubmitOptions } from './submit-options.ts';
import { verificationFeed, type Replica } from './verify.ts';

/** Error codes with which a node says "not me" rather than "not this request": placement asks the next node. */
const NODE_REFUSALS = new Set(['no_room', 'no_driver', 'capacity_exceeded', 'queue_full', 'node_stopping', 'rate_limited', 'blob_store_full', 'internal']);

function isNodeRefusal(err: unknown): boolean {
  return !isVmeshError(err) || NODE_REFUSALS.has(err.code);
}


/**
 * How a node hands runs to the mesh: placement over itself and every member it sees (the columnar view,
 * the target's refusal moving on to the next), runs sent to one node with their receipts checked and their
 * outcome recorded in the reputation, failover of placed runs, and verified runs on several nodes. The
 * node routes a submission here; what runs on this node itself goes back through `node.submitHere`.
 */
export class Dispatch {
  /** The candidates of the last placement, in columns (kept between decisions, updated in place). */
  private readonly view = new PlacementView();

  constructor(
    private readonly node: VmeshNode,
    private readonly remote: RemoteDispatch | undefined,
  ) {}

  /** Whether placement has anything to choose between: other members of a mesh. */
  get hasPeers(): boolean {
    return this.remote !== undefined && this.remote.memberCount() > 0;
  }

  /**
   * Places a run: ranks the nodes that fit (this one included), asks the best, and on a refusal ("not me":
   * no room now, no such driver after all, gone) the next, up to `placement.attempts` nodes. When none has
   * the room free now, the run goes to the queue of the best node that has the room in all.
   */
  async placed(workload: Workload, options: SubmitOptions): Promise<Run> {
    const id = options.id ?? newRunId();
    const candidates = this.candidates();
    const request = placementRequest(workload, resolveResources(workload), seedOf(id), this.node.config.mesh.location);
    const policy = requestPolicy(this.node.config.placement, workload.placement);
    const explanation = options.explain === true ? explain(candidates, request, policy) : undefined;
    this.view.replaceAll(candidates);
    const tried: RunPlacement['tried'] = [];
    const roomless = new Set<string>();
    for (const queued of [false, true]) {
      request.ignoreFree = queued;
      for (const node of roomless) request.exclude.delete(node); // they may queue it
      const run = await this.askInTurn(
        request,
        policy,
        async (node) => {
          const placement: RunPlacement = {
            node,
            summary: explanation?.summary ?? `rank 1 of the nodes that fit, among ${candidates.length} known`,
            tried: [...tried],
            ...(queued ? { queued: true } : {}),
            ...(explanation === undefined ? {} : { explanation }),
          };
          const started =
            node === this.node.id
              ? await this.node.submitHere(workload, { ...options, id, mustFitNow: !queued, placement })
              : await this.sendTo(node, workload, { id, mustFitNow: !queued, placement, failover: { request, policy } });
          this.node.metrics.placements.inc({ target: queued ? 'queue' : node === this.node.id ? 'self' : 'peer' });
          return started;
        },
        (node, err) => {
          tried.push({ node, reason: err.message.slice(0, 1024) });
          if (isVmeshError(err) && err.code === 'no_room') roomless.add(node);
        },
      );
      if (run !== undefined) return run;
    }
    this.node.metrics.runsRejected.inc({ code: 'no_node_fits' });
    const refusals = tried.length === 0 ? '' : ` (asked: ${tried.map((t) => `${t.node}: ${t.reason}`).join('; ')})`;
    throw new NoNodeFitsError(`${explain(candidates, request, policy).summary}${refusals}`, { field: 'placement' });
  }

  /**
   * Asks the best-ranked node, and on a "not me" (the node's own refusal, or no answer) excludes it and asks
   * the next, up to `placement.attempts` nodes; undefined when none took it. A request that is wrong in
   * itself is thrown at once.
   */
  private async askInTurn<T>(request: PlacementRequest, policy: PlacementPolicy, ask: (node: string) => Promise<T>, refused?: (node: string, err: Error) => void): Promise<T | undefined> {
    for (let asked = 0; asked < this.node.config.placement.attempts; asked++) {
      const best = this.view.rank(request, policy, 1)[0];
      if (best === undefined) return undefined;
      try {
        return await ask(best.id);
      } catch (err) {
        if (!isNodeRefusal(err)) throw err;
        this.node.metrics.placementRefusals.inc({ code: isVmeshError(err) ? err.code : 'unreachable' });
        request.exclude.set(best.id, `asked already: ${(err as Error).message}`);
        refused?.(best.id, err as Error);
      }
    }
    return undefined;
  }

  /**
   * Runs a deterministic workload on several distinct nodes, each replica a run of its own, and follows them
   * as this one run: it ends with the result more than half agree on, and the nodes whose result differs
   * lose reputation. `verify.replicas`: the k best nodes that fit. `verify.spotCheck`: the best node, and as
   * often as it is new or little trusted the next one too; a disagreement is settled by a third.
   */
  async verified(workload: Workload, options: SubmitOptions): Promise<Run> {
    const verify = workload.verify!;
    if ((verify.replicas === undefined) === (verify.spotCheck !== true)) {
      throw new InvalidInputError('verify: give either replicas (2 to 7) or spotCheck: true', { field: 'verify' });
    }
    const id = options.id ?? newRunId();
    const field = verify.replicas === undefined ? 'verify.spotCheck' : 'verify.replicas';
    const wanted = verify.replicas ?? 1;
    const candidates = this.candidates();
    const request = placementRequest(workload, resolveResources(workload), seedOf(id), this.node.config.mesh.location);
    const policy = requestPolicy(this.node.config.placement, workload.placement);
    this.view.replaceAll(candidates);
    const nodes = this.view.rank(request, policy, Math.max(wanted, 3)).map((r) => r.id);
    if (nodes.length < wanted || nodes.length === 0) {
      this.node.metrics.runsRejected.inc({ code: 'no_node_fits' });
      throw new NoNodeFitsError(`${field}: ${wanted} distinct nodes asked, ${nodes.length} fit now: ${explain(candidates, request, policy).summary}`, { field });
    }
    let mode: { mode: 'replicas' | 'spot-check'; rate?: number } = { mode: 'replicas' };
    let first = nodes.slice(0, wanted);
    if (verify.spotCheck === true) {
      const chosen = nodes[0]!;
      const rate = spotCheckRate(chosen === this.node.id ? undefined : this.peerReputation(chosen));
      mode = { mode: 'spot-check', rate };
      first = nodes.length > 1 && Math.random() < rate ? nodes.slice(0, 2) : [chosen];
    }
    const spare = nodes.slice(first.length);
    const { verify: _verify, ...single } = workload;
    const start = async (node: string, i: number): Promise<Replica> => {
      const replica: Workload = { ...single, name: `${(workload.name ?? 'verified').slice(0, 160)} (replica ${i + 1} for ${id})` };
      const placement: RunPlacement = { node, summary: `replica ${i + 1} of verified run ${id}`, tried: [] };
      const run = node === this.node.id ? await this.node.submitHere(replica, { placement }) : await this.sendTo(node, replica, { placement });
      return { run: run.id, node };
    };
    const replicas: Replica[] = [];
    try {
      for (const [i, node] of first.entries()) replicas.push(await start(node, i));
    } catch (err) {
      for (const r of replicas) this.node.executor.cancel(r.run, `verified run ${id} could not start all its replicas`);
      throw err;
    }
    const feed = verificationFeed(this.node, replicas, {
      mode,
      // Only a spot check adds a node (to settle a disagreement of two); fixed replicas stand as asked.
      ...(verify.spotCheck === true ? { escalate: async () => (spare.length === 0 ? undefined : start(spare.shift()!, replicas.length)) } : {}),
      onVerdict: (v) => {
        this.node.metrics.verifications.inc({ mode: v.mode, verdict: v.verdict });
        if (v.verdict === 'inconclusive' || v.replicas < 2) return;
        for (const r of v.runs) if (r.node !== this.node.id) this.node.reputation.record(r.node, r.agreed ? 'verified' : 'mismatch');
        const dissent = v.runs.filter((r) => !r.agreed);
        if (dissent.length > 0) this.node.logger.warn({ runId: id, dissent: dissent.map((r) => r.node) }, 'verification: nodes returned a result the majority did not');
      },
    });
    const now = new Date().toISOString();
    const record: RunRecord = { id, state: 'queued', kind: workload.kind, nodeId: this.node.id, spec: workload, resources: resolveResources(workload), createdAt: now, updatedAt: now };
    if (workload.name !== undefined) record.name = workload.name;
    record.placement = { node: nodes[0]!, summary: `verified (${mode.mode}) on ${first.join(', ')}`, tried: [] };
    this.node.executor.follow(record, feed);
    return this.node.toPublic(record);
  }

  /** Where placement would put a workload, and why: every node, every filter's verdict, every score term. */
  explain(workload: Workload): PlacementExplanation {
    const request = placementRequest(workload, resolveResources(workload), seedOf(newRunId()), this.node.config.mesh.location);
    return explain(this.candidates(), request, requestPolicy(this.node.config.placement, workload.placement));
  }

  /** The reputation this node holds of a peer: its own observations, with the reports of peers it trusts. */
  peerReputation(peer: string): CombinedReputation {
    return this.node.reports.combined(peer, this.node.reputation);
  }

  /** This node and every member of the mesh it sees, as placement candidates. */
  candidates(): Candidate[] {
    const self: Candidate = { id: this.node.id, self: true, advert: this.node.soloAdvert(), reputation: 1 };
    const others = (this.remote?.members() ?? []).map((m): Candidate => {
      const c: Candidate = { id: m.advert.node, self: false, advert: m.advert, reputation: this.peerReputation(m.advert.node).score };
      if (m.rttMs !== undefined) c.rttMs = m.rttMs;
      return c;
    });
    return [self, ...others];
  }

  /** Sends a run to node `target` and follows it there: stored here, executed there. */
  async sendTo(
    target: string,
    workload: Workload,
    options: { id?: string; mustFitNow?: boolean; placement?: RunPlacement; failover?: { request: PlacementRequest; policy: PlacementPolicy } } = {},
  ): Promise<Run> {
    try {
      if (this.remote === undefined) {
        throw new InvalidInputError(`placement.node: this node is in no mesh, so it cannot send a run to ${target}`, { field: 'placement.node' });
      }
      const resources = resolveResources(workload);
      const spec = await remoteSpec(workload, this.node.blobs);
      const id = options.id ?? newRunId();
      const remote = this.remote;
      const p = this.node.config.placement;
      const heartbeat = { everyMs: p.heartbeatMs, timeoutMs: p.heartbeatTimeoutMs };
      let outcome: Outcome | undefined;
      const specHash = canonicalHash(spec);
      const checked = async (node: string, started: Promise<RemoteFeed>) =>
        receiptChecked(await started, { run: id, specHash }, (problem) => {
          outcome = 'bad_receipt';
          this.node.metrics.receiptsRefused.inc();
          this.node.logger.warn({ runId: id, node, problem }, 'a node sent back a run whose receipt does not check');
        });
      const sentAt = performance.now();
      let feed = await checked(target, remote.start(target, id, spec, { mustFitNow: options.mustFitNow === true, heartbeat }));
      const { failover } = options;
      if (failover !== undefined) {
        feed = failoverFeed(feed, {
          maxAttempts: p.attempts,
          backoffMs: p.backoffMs,
          onLost: (node, reason) => {
            this.node.metrics.failovers.inc();
            this.node.reputation.record(node, 'lost');
            this.node.logger.warn({ runId: id, node, reason }, 'lost the node running a run: placing it again');
          },
          restart: async (lost, signal) => {
            const { request, policy } = failover;
            request.ignoreFree = false;
            request.exclude.set(this.node.id, 'a run placed again goes to another node');
            for (const node of lost) request.exclude.set(node, 'lost during an earlier attempt');
            const candidates = this.candidates();
            this.view.replaceAll(candidates);
            const feed = await this.askInTurn(request, policy, (node) => checked(node, remote.start(node, id, spec, { mustFitNow: true, heartbeat, signal })));
            if (feed === undefined) throw new NoNodeFitsError(explain(candidates, request, policy).summary);
            return feed;
          },
        });
      }
      const now = new Date().toISOString();
      const record: RunRecord = { id, state: 'queued', kind: workload.kind, nodeId: target, spec, resources, createdAt: now, updatedAt: now };
      if (workload.name !== undefined) record.name = workload.name;
      if (options.placement !== undefined) record.placement = options.placement;
      this.node.executor.follow(record, feed);
      // The executing node fetches the run's blobs from here: they stay until the run is over.
      const release = await this.node.blobs.hold(blobsOf(spec));
      this.node.afterSettled(id, (record) => {
        release();
        const ended = record ?? this.node.store.getRun(id);
        outcome ??= ended === undefined ? undefined : outcomeOf(ended);
        // The node that ended it (after a failover, not the first); lost ones were recorded as they went.
        if (outcome !== undefined && ended !== undefined && ended.attempts?.at(-1)?.outcome !== 'lost') this.node.reputation.record(ended.nodeId, outcome);
        // Its answer against its distance: how much longer it took here than it says it ran.
        if (ended !== undefined && ended.attempts === undefined && ended.result !== undefined) {
          const rtt = remote.rttOf(ended.nodeId);
          if (latencyOutcome(performance.now() - sentAt, ended.result.timings.totalMs, rtt) === 'slow') this.node.reputation.record(ended.nodeId, 'slow');
        }
      });
      return this.node.toPublic(record);
    } catch (err) {
      this.node.metrics.runsRejected.inc({ code: isVmeshError(err) ? err.code : 'internal' });
      throw err;
    }
  }
}

/** What a run that ended says about the node that executed it. */
function outcomeOf(run: RunRecord): Outcome | undefined {
  switch (run.state) {
    case 'succeeded':
      return 'succeeded';
    case 'failed':
      if (run.reason?.startsWith('lost contact') === true || run.reason?.includes('closed the run') === true) return 'lost';
      return run.result?.exitCode !== null && run.result?.exitCode !== undefined ? 'failed' : 'crashed';
    case 'oom':
      return 'failed';
    case 'timeout':
      return 'timeout';
    case 'lost':
      return 'lost';
    default:
      return undefined; // cancelled, or not over
  }
}
