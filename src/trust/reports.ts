import Type, { type Static } from 'typebox';
import { signedStatement, type Envelope } from './envelope.ts';
import type { PeerReputation, Reputation } from './reputation.ts';
import type { EnvelopeSigner } from './signer.ts';

export const REPORT_FORMAT = 'vmesh-report/1';
/** The gossip topic reports travel on. */
export const REPORT_TOPIC = 'vmesh/reports/1';
export const MAX_REPORT_BYTES = 32 * 1024;
/** The peers one report names at most: those the reporter has the most evidence about. */
export const MAX_REPORTED_PEERS = 128;
/** One reporter's evidence about one peer counts as at most this many outcomes, however many it claims. */
export const REPORT_EVIDENCE_CAP = 10;
/** A report counts half as much as what this node saw itself, at the most. */
const REPORT_DISCOUNT = 0.5;

/** What a node says it has seen of its peers' work: its own decayed weights, signed. */
export const ReputationReport = Type.Object(
  {
    format: Type.Literal(REPORT_FORMAT),
    node: Type.String({ maxLength: 128, description: 'the reporter, which signed it' }),
    seq: Type.Integer({ minimum: 0 }),
    issuedAt: Type.String({ maxLength: 40 }),
    peers: Type.Array(
      Type.Object(
        { id: Type.String({ maxLength: 128 }), good: Type.Number({ minimum: 0, maximum: 1e9 }), bad: Type.Number({ minimum: 0, maximum: 1e9 }) },
        { additionalProperties: false },
      ),
      { maxItems: MAX_REPORTED_PEERS },
    ),
  },
  { additionalProperties: false },
);
export type ReputationReport = Static<typeof ReputationReport>;

export const openReport = signedStatement(ReputationReport, REPORT_FORMAT, MAX_REPORT_BYTES, 'report');

/** This node's report: the peers it has the most evidence about, as its reputation holds them now. */
export function signReport(signer: EnvelopeSigner, reputation: Reputation, seq: number): Envelope {
  const peers = reputation
    .list()
    .filter((r) => r.peer !== signer.signer && r.good + r.bad > 0.01)
    .sort((a, b) => b.good + b.bad - (a.good + a.bad))
    .slice(0, MAX_REPORTED_PEERS)
    .map((r) => ({ id: r.peer, good: round(r.good), bad: round(r.bad) }));
  const report: ReputationReport = { format: REPORT_FORMAT, node: signer.signer, seq, issuedAt: new Date().toISOString(), peers };
  return signer.seal(REPORT_FORMAT, report);
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** A peer's reputation as this node holds it: its own observations and what others reported, combined. */
export interface CombinedReputation extends PeerReputation {
  /** The score from this node's own observations alone. */
  local: number;
  /** Reports that counted (their reporter had earned weight), and how much evidence they added. */
  reports: { counted: number; good: number; bad: number };
}

/**
 * The newest report of every reporter, and how this node combines them with what it saw itself. A report
 * counts by its reporter's own reputation here: a reporter this node has seen nothing good of (a stranger,
 * score 0.5) or worse counts for nothing; one with score s counts (2s - 1) × 0.5; and each reporter's
 * claim about one peer is capped at 10 outcomes. So strangers and known liars cannot raise or sink a node,
 * and a few trusted reporters move it less than this node's own experience can.
 */
export class ReportBook {
  /** Each reporter's newest report: its sequence number and the peers it names. */
  private readonly held = new Map<string, { seq: number; peers: string[] }>();
  /** What each reporter's newest report claims, by the peer it is about: placement asks per candidate. */
  private readonly claims = new Map<string, Map<string, { good: number; bad: number }>>();

  /** Takes a verified report; an older one than held is ignored. */
  accept(report: ReputationReport): boolean {
    const held = this.held.get(report.node);
    if (held !== undefined && held.seq >= report.seq) return false;
    this.forget(report.node);
    this.held.set(report.node, { seq: report.seq, peers: report.peers.map((p) => p.id) });
    for (const { id, good, bad } of report.peers) {
      let about = this.claims.get(id);
      if (about === undefined) this.claims.set(id, (about = new Map()));
      about.set(report.node, { good, bad });
    }
    return true;
  }

  forget(reporter: string): void {
    const held = this.held.get(reporter);
    if (held === undefined) return;
    this.held.delete(reporter);
    for (const peer of held.peers) {
      const about = this.claims.get(peer);
      if (about?.delete(reporter) === true && about.size === 0) this.claims.delete(peer);
    }
  }

  get size(): number {
    return this.held.size;
  }

  combined(peer: string, reputation: Reputation): CombinedReputation {
    const own = reputation.get(peer);
    let good = own.good;
    let bad = own.bad;
    const reports = { counted: 0, good: 0, bad: 0 };
    for (const [reporter, claim] of this.claims.get(peer) ?? []) {
      if (reporter === peer || reporter === reputation.self) continue;
      const weight = Math.max(0, 2 * reputation.score(reporter) - 1) * REPORT_DISCOUNT;
      if (weight === 0) continue;
      const total = claim.good + claim.bad;
      const scale = total > REPORT_EVIDENCE_CAP ? REPORT_EVIDENCE_CAP / total : 1;
      reports.counted++;
      reports.good += weight * claim.good * scale;
      reports.bad += weight * claim.bad * scale;
    }
    good += reports.good;
    bad += reports.bad;
    return { ...own, local: own.score, score: (good + 1) / (good + bad + 2), good, bad, reports };
  }
}
