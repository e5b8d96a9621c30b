import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The node's Prometheus metrics, in a registry of its own (several nodes can share a process in tests). */
export class NodeMetrics {
  readonly registry = new Registry();
  readonly runsSubmitted = new Counter({ name: 'vmesh_runs_submitted_total', help: 'Runs accepted by this node', labelNames: ['kind'], registers: [this.registry] });
  readonly runsEnded = new Counter({ name: 'vmesh_runs_ended_total', help: 'Runs that reached a terminal state', labelNames: ['driver', 'state'], registers: [this.registry] });
  readonly runsRejected = new Counter({ name: 'vmesh_runs_rejected_total', help: 'Submissions refused before a run was created', labelNames: ['code'], registers: [this.registry] });
  readonly runDuration = new Histogram({
    name: 'vmesh_run_duration_seconds',
    help: 'Time from running to ended',
    labelNames: ['driver'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly queueLength = new Gauge({ name: 'vmesh_queue_length', help: 'Runs waiting for resources', registers: [this.registry] });
  readonly running = new Gauge({ name: 'vmesh_runs_active', help: 'Runs placed, starting or running', registers: [this.registry] });
  readonly capacity = new Gauge({ name: 'vmesh_capacity', help: 'What this node can hand out', labelNames: ['resource'], registers: [this.registry] });
  readonly placements = new Counter({
    name: 'vmesh_placements_total',
    help: 'Runs placement sent somewhere: to this node, to another, or to a queue because no node had room free',
    labelNames: ['target'],
    registers: [this.registry],
  });
  readonly placementRefusals = new Counter({ name: 'vmesh_placement_refusals_total', help: 'Nodes that said "not me" to a placed run', labelNames: ['code'], registers: [this.registry] });
  readonly failovers = new Counter({ name: 'vmesh_failovers_total', help: 'Nodes lost while they ran a placed run (the run is placed again while attempts remain)', registers: [this.registry] });
  readonly receiptsRefused = new Counter({ name: 'vmesh_receipts_refused_total', help: 'Remote runs whose receipt did not check', registers: [this.registry] });
  readonly verifications = new Counter({ name: 'vmesh_verifications_total', help: 'Verified runs, by mode and verdict', labelNames: ['mode', 'verdict'], registers: [this.registry] });
  readonly blobFetches = new Counter({
    name: 'vmesh_blob_fetches_total',
    help: 'Blobs fetched from another node, by the way their bytes came (lane: the sender\'s blob lane; stream: the mesh connection)',
    labelNames: ['via'],
    registers: [this.registry],
  });
  readonly free = new Gauge({ name: 'vmesh_free', help: 'What this node has not reserved', labelNames: ['resource'], registers: [this.registry] });

  constructor() {
    // The event-loop lag histogram samples on a timer: prom-client's default of every 10 ms woke an idle
    // node 100 times a second (a node alone: 19-20.5 ms CPU a second, 16.5-17.5 at 100 ms, 2026-12-02).
    collectDefaultMetrics({ register: this.registry, prefix: 'vmesh_process_', eventLoopMonitoringPrecision: 100 });
  }
}
