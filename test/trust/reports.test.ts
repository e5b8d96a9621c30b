import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Store } from '../../src/store/store.ts';
import { ReportBook, openReport, REPORT_FORMAT, signReport, type ReputationReport } from '../../src/trust/reports.ts';
import { Reputation } from '../../src/trust/reputation.ts';
import { EnvelopeSigner } from '../../src/trust/signer.ts';
import { tempDir } from '../helpers/tmp.ts';

function reputationIn(dir: string, name: string, self: string): { rep: Reputation; store: Store } {
  const store = new Store(path.join(dir, `${name}.db`));
  const now = Date.now();
  return { rep: new Reputation(store, 3_600_000, () => now, self), store };
}

const report = (node: string, peers: ReputationReport['peers'], seq = 1): ReputationReport => ({ format: REPORT_FORMAT, node, seq, issuedAt: new Date().toISOString(), peers });

describe('reputation reports', () => {
  it('a report is signed by its reporter and checked; a report in another node\'s name is refused', async () => {
    const tmp = tempDir('vmesh-reports-');
    const key = await generateKeyPair('Ed25519');
    const signer = new EnvelopeSigner(key, peerIdFromPrivateKey(key).toString());
    const { rep, store } = reputationIn(tmp.dir, 'r', signer.signer);
    try {
      for (let i = 0; i < 3; i++) rep.record('peer-a', 'succeeded');
      rep.record('peer-b', 'lost');
      const env = signReport(signer, rep, 7);
      const opened = await openReport(JSON.stringify(env));
      assert.equal(opened.node, signer.signer);
      assert.deepEqual(opened.peers.map((p) => p.id).sort(), ['peer-a', 'peer-b']);
      const other = await generateKeyPair('Ed25519');
      const forger = new EnvelopeSigner(other, peerIdFromPrivateKey(other).toString());
      await assert.rejects(openReport(JSON.stringify(forger.seal(REPORT_FORMAT, { ...opened, seq: 8 }))), /report.node: .* is not its signer/);
    } finally {
      store.close();
      tmp.remove();
    }
  });

  it('reports count by their reporter\'s reputation: strangers and known liars count nothing, trusted reporters are capped', () => {
    const tmp = tempDir('vmesh-reports-');
    const { rep, store } = reputationIn(tmp.dir, 'a', 'me');
    try {
      const book = new ReportBook();
      // This node trusts "friend" (8 good runs: 0.9) and caught "liar" (a mismatch); "stranger" it never saw.
      for (let i = 0; i < 8; i++) rep.record('friend', 'succeeded');
      rep.record('liar', 'mismatch');
      book.accept(report('liar', [{ id: 'target', good: 0, bad: 1e6 }]));
      book.accept(report('stranger', [{ id: 'target', good: 0, bad: 1e6 }]));
      let t = book.combined('target', rep);
      assert.equal(t.score, 0.5, 'neither the liar nor the stranger moved it');
      assert.equal(t.reports.counted, 0);
      // A trusted reporter moves it, but its claim counts as at most 10 outcomes, at (2 × 0.9 - 1) × 0.5 = 0.4 each.
      book.accept(report('friend', [{ id: 'target', good: 1000, bad: 0 }]));
      t = book.combined('target', rep);
      assert.equal(t.reports.counted, 1);
      assert.ok(Math.abs(t.reports.good - 4) < 1e-9, String(t.reports.good));
      assert.ok(Math.abs(t.score - 5 / 6) < 1e-9, String(t.score));
      assert.equal(t.local, 0.5, 'its own observations alone say nothing yet');
      // Many colluding strangers cannot sink it either.
      for (let i = 0; i < 50; i++) book.accept(report(`sybil-${i}`, [{ id: 'target', good: 0, bad: 10 }]));
      assert.equal(book.combined('target', rep).score, t.score);
      // An older report from a reporter does not replace a newer one; nobody's report about itself counts.
      assert.equal(book.accept(report('friend', [{ id: 'target', good: 0, bad: 10 }], 0)), false);
      book.accept(report('friend', [{ id: 'friend', good: 1e6, bad: 0 }], 2));
      assert.equal(book.combined('friend', rep).reports.counted, 0);
    } finally {
      store.close();
      tmp.remove();
    }
  });
});
