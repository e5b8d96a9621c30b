/** Placement: which node runs a request. Filters, then scores, then the best; `explain` says why. */
export { type Candidate, idHash, seedOf } from './candidate.ts';
export { DEFAULT_POLICY, requestPolicy, type PlacementPolicy } from './policy.ts';
export { placementRequest, effectiveRtt, type PlacementRequest } from './request.ts';
export { FILTER_NAMES, type FilterName } from './filters.ts';
export { explain, scoreOf, type PlacementExplanation, type CandidateVerdict, type ScoreTerms } from './explain.ts';
export { PlacementView, type Ranked } from './view.ts';
