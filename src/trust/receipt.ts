import Type, { type Static } from 'typebox';
import { ReservedResources, Usage, type Run, type RunResult } from '../spec/index.ts';
import { canonicalHash, textHash } from './canonical.ts';
import { BadEnvelopeError, signedStatement, type Envelope } from './envelope.ts';
import type { EnvelopeSigner } from './signer.ts';

export const RECEIPT_FORMAT = 'vmesh-receipt/1';
/** A receipt is small: hashes and numbers. Anything bigger is refused unread. */
export const MAX_RECEIPT_BYTES = 64 * 1024;

const hash = (description?: string) => Type.String({ pattern: '^sha256:[0-9a-f]{64}$', ...(description === undefined ? {} : { description }) });
const Hash = hash();

/** What the result of a run was, by hashes: enough to compare two runs of the same spec. */
export const ResultDigest = Type.Object(
  {
    exitCode: Type.Union([Type.Integer(), Type.Null()]),
    stdout: Type.Object({ sha256: Hash, bytes: Type.Integer(), truncated: Type.Boolean() }, { additionalProperties: false }),
    stderr: Type.Object({ sha256: Hash, bytes: Type.Integer(), truncated: Type.Boolean() }, { additionalProperties: false }),
    output: Type.Optional(Hash),
    outputsArchive: Type.Optional(Hash),
  },
  { additionalProperties: false },
);
export type ResultDigest = Static<typeof ResultDigest>;

/**
 * The record of one execution, signed by the node that ran it: what was asked (the spec's hash, the blobs it
 * read), what came out (hashes of the result, and one hash over the parts a deterministic workload
 * reproduces), what it held and used, and when.
 */
export const Receipt = Type.Object(
  {
    format: Type.Literal(RECEIPT_FORMAT),
    run: Type.String({ maxLength: 64 }),
    node: Type.String({ maxLength: 128, description: 'the node that executed the run and signed this' }),
    requester: Type.Optional(Type.String({ maxLength: 128, description: 'the node that asked for it, when another node did' })),
    state: Type.String({ maxLength: 16 }),
    driver: Type.Optional(Type.String({ maxLength: 64 })),
    specHash: hash('sha256 of the canonical JSON of the workload as the node received it'),
    inputs: Type.Array(Hash, { maxItems: 512, description: 'the blobs the run read: its source and its input files' }),
    result: Type.Optional(ResultDigest),
    resultHash: Type.Optional(hash('sha256 of the canonical JSON of exit code, stdout, output and outputs archive: what verification compares')),
    reserved: ReservedResources,
    used: Usage,
    createdAt: Type.String({ maxLength: 40 }),
    startedAt: Type.Optional(Type.String({ maxLength: 40 })),
    endedAt: Type.String({ maxLength: 40 }),
  },
  { additionalProperties: false },
);
export type Receipt = Static<typeof Receipt>;

const openReceipt = signedStatement(Receipt, RECEIPT_FORMAT, MAX_RECEIPT_BYTES, 'receipt');

/** The digest of a result: hashes of its streams, its JSON output and its outputs archive. */
export function digestResult(result: RunResult): ResultDigest {
  const digest: ResultDigest = {
    exitCode: result.exitCode,
    stdout: { sha256: textHash(result.stdout.text), bytes: result.stdout.bytes, truncated: result.stdout.truncated },
    stderr: { sha256: textHash(result.stderr.text), bytes: result.stderr.bytes, truncated: result.stderr.truncated },
  };
  if (result.output !== undefined) digest.output = canonicalHash(result.output);
  if (result.outputsArchive !== undefined) digest.outputsArchive = result.outputsArchive.blob;
  return digest;
}

/** The hash two honest runs of a deterministic workload agree on (stderr and timings left out). */
export function resultHashOf(d: ResultDigest): string {
  return canonicalHash({ exitCode: d.exitCode, stdout: d.stdout, output: d.output ?? null, outputsArchive: d.outputsArchive ?? null });
}

export interface ReceiptContext {
  specHash: string;
  inputs: string[];
  requester?: string;
}

/** Makes and signs the receipt of a run that has just ended. */
export function signReceipt(signer: EnvelopeSigner, run: Run, context: ReceiptContext): Envelope {
  const receipt: Receipt = {
    format: RECEIPT_FORMAT,
    run: run.id,
    node: signer.signer,
    state: run.state,
    specHash: context.specHash,
    inputs: [...new Set(context.inputs)].slice(0, 512),
    reserved: run.resources,
    used: run.result?.usage ?? {},
    createdAt: run.createdAt,
    endedAt: run.endedAt ?? new Date().toISOString(),
  };
  if (context.requester !== undefined) receipt.requester = context.requester;
  if (run.driver !== undefined) receipt.driver = run.driver;
  if (run.startedAt !== undefined) receipt.startedAt = run.startedAt;
  if (run.result !== undefined) {
    receipt.result = digestResult(run.result);
    receipt.resultHash = resultHashOf(receipt.result);
  }
  return signer.seal(RECEIPT_FORMAT, receipt);
}

/**
 * Checks a receipt with nothing but itself: the envelope's signature by its signer's key (inside the
 * signer's peer id), the schema, and that the node it names is its signer. Throws BadEnvelopeError.
 */
export async function verifyReceipt(envelope: Envelope | string | Uint8Array): Promise<Receipt> {
  return openReceipt(typeof envelope === 'object' && !(envelope instanceof Uint8Array) ? JSON.stringify(envelope) : envelope);
}

/**
 * What a requesting node checks of the receipt a peer sent back with a run it asked for: a good signature,
 * by the node it sent the run to, for this run and exactly the spec it sent, and a result digest that
 * matches the result that came with it.
 */
export async function checkReceiptFor(envelope: Envelope, expect: { node: string; run: string; specHash: string; result?: RunResult }): Promise<Receipt> {
  const receipt = await verifyReceipt(envelope);
  if (receipt.node !== expect.node) throw new BadEnvelopeError(`receipt.node: signed by ${receipt.node}, but the run was sent to ${expect.node}`);
  if (receipt.run !== expect.run) throw new BadEnvelopeError(`receipt.run: for run ${receipt.run}, not ${expect.run}`);
  if (receipt.specHash !== expect.specHash) throw new BadEnvelopeError(`receipt.specHash: ${receipt.specHash} is not the hash of the spec sent (${expect.specHash})`);
  if (expect.result !== undefined && receipt.resultHash !== resultHashOf(digestResult(expect.result))) {
    throw new BadEnvelopeError('receipt.resultHash: does not match the result that came with it');
  }
  return receipt;
}
