import type { Static } from 'typebox';
import type { CandidateVerdictSchema, PlacementExplanationSchema, ScoreTerms } from '../spec/index.ts';
import type { Candidate } from './candidate.ts';
import { idHash } from './candidate.ts';
import { amountText, FILTER_NAMES, FILTERS, type FilterName } from './filters.ts';
import type { PlacementPolicy } from './policy.ts';
import { effectiveRtt, RESOURCE_KEYS, type PlacementRequest } from './request.ts';
import { combine, jitterTerm, loadTerm, proximityTerm, resourceTerm, standing, totalWeight } from './scores.ts';

/** Every candidate with each filter's verdict and, if it passed them all, each score term and its rank. */
export type CandidateVerdict = Static<typeof CandidateVerdictSchema>;
export type PlacementExplanation = Omit<Static<typeof PlacementExplanationSchema>, 'policy'> & { policy: PlacementPolicy };
export type { ScoreTerms };

/** The score terms of an eligible candidate (the same arithmetic as the fast path). */
export function scoreOf(c: Candidate, r: PlacementRequest, p: PlacementPolicy): { score: number; terms: ScoreTerms } {
  const a = c.advert;
  const terms: ScoreTerms = {
    resources: resourceTerm(p.strategy === 'binpack', a.capacity.vcpus, a.free.vcpus, r.want.vcpus, a.capacity.memoryMiB, a.free.memoryMiB, r.want.memoryMiB),
    proximity: proximityTerm(effectiveRtt(c, r.origin).ms),
    reputation: c.reputation,
    load: loadTerm(a.runs.active, a.runs.queued, a.capacity.vcpus),
    jitter: jitterTerm(r.seed, idHash(c.id)),
  };
  return { score: combine(p, totalWeight(p), terms.resources, standing(p, terms.proximity, terms.reputation, terms.load), terms.jitter), terms };
}

/** Orders ranked candidates: higher score first, then node id (a total order: both paths agree on ties). */
export function byScore(a: { score: number; id: string }, b: { score: number; id: string }): number {
  return b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * Places by brute force and says why: every filter on every candidate, every term of every eligible one,
 * a full sort. The reference the fast path is checked against, and what `--explain` shows.
 */
export function explain(candidates: readonly Candidate[], r: PlacementRequest, p: PlacementPolicy): PlacementExplanation {
  const verdicts: CandidateVerdict[] = candidates.map((c) => {
    const filters = FILTER_NAMES.map((filter) => {
      const reason = FILTERS[filter](c, r, p);
      return reason === undefined ? { filter, pass: true } : { filter, pass: false, reason };
    });
    const eligible = filters.every((f) => f.pass);
    const rtt = effectiveRtt(c, r.origin);
    const v: CandidateVerdict = { node: c.id, self: c.self, eligible, filters, rtt: { ms: Number.isNaN(rtt.ms) ? null : rtt.ms, source: rtt.source }, reputation: c.reputation };
    if (eligible) Object.assign(v, scoreOf(c, r, p));
    return v;
  });
  const eligible = verdicts.filter((v) => v.eligible).sort((a, b) => byScore({ score: a.score!, id: a.node }, { score: b.score!, id: b.node }));
  eligible.forEach((v, i) => (v.rank = i + 1));
  const rejected = verdicts.filter((v) => !v.eligible);
  return { chosen: eligible[0]?.node ?? null, policy: p, candidates: [...eligible, ...rejected], summary: summarize(candidates, eligible.length, rejected, r) };
}

function summarize(candidates: readonly Candidate[], eligible: number, rejected: CandidateVerdict[], r: PlacementRequest): string {
  const n = candidates.length;
  const nodes = (k: number) => `${k} node${k === 1 ? '' : 's'}`;
  const head = eligible > 0 ? `${nodes(eligible)} of ${n} fit` : `no node fits this ${r.kind} run: of ${nodes(n)}`;
  if (rejected.length === 0) return head;
  const byFilter = new Map<FilterName, CandidateVerdict[]>();
  for (const v of rejected) {
    const first = v.filters.find((f) => !f.pass)!.filter as FilterName;
    byFilter.set(first, [...(byFilter.get(first) ?? []), v]);
  }
  const parts = [...byFilter].map(([filter, vs]) => `${vs.length} ${rejectionText(filter, vs, candidates, r)}`);
  return `${head}${eligible > 0 ? '; ' : ', '}${parts.join('; ')}`;
}

/** "have no driver for it" / "have a driver but none has 8192 MiB memory free; the most is 6144 on X". */
function rejectionText(filter: FilterName, vs: CandidateVerdict[], candidates: readonly Candidate[], r: PlacementRequest): string {
  const one = vs.length === 1;
  switch (filter) {
    case 'excluded':
      return `${one ? 'was' : 'were'} tried already`;
    case 'driver':
      return `${one ? 'has' : 'have'} no available driver for a ${r.kind}${r.isolation === undefined ? '' : ` with ${r.isolation} isolation`}${r.driver === undefined ? '' : ` named ${r.driver}`}`;
    case 'labels':
      return `${one ? 'lacks' : 'lack'} the labels ${r.labels.map(([k, v]) => `${k}=${v}`).join(', ')}`;
    case 'region':
      return `${one ? 'is' : 'are'} outside the regions asked`;
    case 'reputation':
      return `${one ? 'is' : 'are'} below the least reputation`;
    case 'rtt':
      return `${one ? 'is' : 'are'} further than ${r.maxRttMs} ms`;
    case 'capacity':
    case 'free': {
      const have = filter === 'capacity' ? 'capacity' : 'free';
      const byId = new Map(candidates.map((c) => [c.id, c]));
      const held = vs.map((v) => byId.get(v.node)!);
      // The resource that stops most of them, and the most of it any of them has.
      const key = RESOURCE_KEYS.map((k) => ({ k, count: held.filter((c) => c.advert[have][k] < r.want[k]).length })).sort((a, b) => b.count - a.count)[0]!.k;
      const best = held.reduce((m, c) => (c.advert[have][key] > m.advert[have][key] ? c : m));
      const what = filter === 'capacity' ? 'in all' : 'free';
      return `${one ? 'has' : 'have'} the driver but not ${amountText(key, r.want[key])} ${what}; the most is ${amountText(key, best.advert[have][key])} on ${best.id}`;
    }
  }
}
