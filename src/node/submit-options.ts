import type { RunPlacement } from '../spec/index.ts';

/** How a submission reaches `VmeshNode.submitValid` (besides the workload). */
export interface SubmitOptions {
  /** The run id another node chose (the same id on both nodes), or placement chose beforehand. */
  id?: string;
  /** Run it on this node whatever its placement hints say (another node placed it here). */
  local?: boolean;
  /** Refuse with no_room instead of queueing when it does not fit now (placement then asks another node). */
  mustFitNow?: boolean;
  /** The node that asked for the run: its receipt names it. */
  requester?: string;
  /** Keep placement's whole explanation with the run (`?explain=true`, `vmesh run --explain`). */
  explain?: boolean;
  /** Where placement put the run and why: stored with it. */
  placement?: RunPlacement;
}
