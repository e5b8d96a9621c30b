import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { Run } from '../../src/spec/index.ts';
import { canonicalHash, canonicalJson } from '../../src/trust/canonical.ts';
import { open } from '../../src/trust/envelope.ts';
import { checkReceiptFor, RECEIPT_FORMAT, signReceipt, verifyReceipt } from '../../src/trust/receipt.ts';
import { EnvelopeSigner } from '../../src/trust/signer.ts';

async function signerOf() {
  const key = await generateKeyPair('Ed25519');
  return new EnvelopeSigner(key, peerIdFromPrivateKey(key).toString());
}

const run: Run = {
  id: 'r0000000000000000000001',
  state: 'succeeded',
  kind: 'function',
  driver: 'quickjs',
  nodeId: 'x',
  resources: { vcpus: 0.1, memoryMiB: 64, diskMiB: 16, timeoutMs: 30_000, network: { egressMbps: 0, ingressMbps: 0 } },
  createdAt: '2026-12-02T00:00:00.000Z',
  updatedAt: '2026-12-02T00:00:01.000Z',
  endedAt: '2026-12-02T00:00:01.000Z',
  result: {
    exitCode: 0,
    stdout: { text: 'hello\n', bytes: 6, truncated: false },
    stderr: { text: '', bytes: 0, truncated: false },
    output: { n: 42 },
    outputs: [],
    timings: { queuedMs: 0, startMs: 1, runMs: 2, totalMs: 3 },
    usage: { cpuMs: 2 },
  },
};

describe('receipts', () => {
  it('canonical JSON is independent of key order', () => {
    assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: null }], e: undefined }), '{"a":[{"c":null,"d":2}],"b":1}');
    assert.equal(canonicalHash({ x: 1, y: 2 }), canonicalHash({ y: 2, x: 1 }));
  });

  it('a signed receipt verifies offline, names its signer, and is an ordinary libp2p ed25519 signature', async () => {
    const signer = await signerOf();
    const spec = canonicalHash({ kind: 'function', source: { inline: 'x' } });
    const env = signReceipt(signer, run, { specHash: spec, inputs: [], requester: 'someone' });
    const receipt = await verifyReceipt(env);
    assert.equal(receipt.format, RECEIPT_FORMAT);
    assert.equal(receipt.node, signer.signer);
    assert.equal(receipt.specHash, spec);
    assert.equal(receipt.result?.exitCode, 0);
    assert.match(receipt.resultHash!, /^sha256:[0-9a-f]{64}$/);
    // The same envelope through the generic checker (libp2p's verify) passes too.
    assert.equal((await open(JSON.stringify(env), RECEIPT_FORMAT, 65536)).signer, signer.signer);
    await checkReceiptFor(env, { node: signer.signer, run: run.id, specHash: spec, result: run.result! });
  });

  it('a receipt with one changed byte fails verification', async () => {
    const signer = await signerOf();
    const env = signReceipt(signer, run, { specHash: canonicalHash({}), inputs: [] });
    const text = JSON.stringify(env);
    // Change one byte inside the signed payload (a digit of the exit code), and one in the signature.
    const at = text.indexOf('\\"exitCode\\":0') + '\\"exitCode\\":'.length;
    const tampered = text.slice(0, at) + '1' + text.slice(at + 1);
    assert.notEqual(tampered, text);
    await assert.rejects(verifyReceipt(tampered), /signature: does not verify/);
    const sig = Buffer.from(env.signature, 'base64');
    sig[10]! ^= 1;
    await assert.rejects(verifyReceipt({ ...env, signature: sig.toString('base64') }), /signature: does not verify/);
  });

  it('a good signature over the wrong thing is refused: another signer, run, spec or result', async () => {
    const signer = await signerOf();
    const other = await signerOf();
    const spec = canonicalHash({ a: 1 });
    const env = signReceipt(signer, run, { specHash: spec, inputs: [] });
    await assert.rejects(checkReceiptFor(env, { node: other.signer, run: run.id, specHash: spec }), /receipt.node: signed by/);
    await assert.rejects(checkReceiptFor(env, { node: signer.signer, run: 'r1', specHash: spec }), /receipt.run/);
    await assert.rejects(checkReceiptFor(env, { node: signer.signer, run: run.id, specHash: canonicalHash({ a: 2 }) }), /receipt.specHash/);
    const changed = { ...run.result!, stdout: { ...run.result!.stdout, text: 'HELLO\n' } };
    await assert.rejects(checkReceiptFor(env, { node: signer.signer, run: run.id, specHash: spec, result: changed }), /receipt.resultHash/);
    // A receipt whose node field names someone other than its signer.
    const forged = other.seal(RECEIPT_FORMAT, { ...JSON.parse(env.payload), node: signer.signer });
    await assert.rejects(verifyReceipt(forged), /is not its signer/);
  });
});
