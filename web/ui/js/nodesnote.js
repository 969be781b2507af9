// In a cluster, a merged answer names the nodes that did not answer
// (unanswered_nodes) and those of them whose share was read from their
// copy in the bucket (from_bucket_nodes); the pages say so above what
// lacks their share.
import { el } from './util.js';

/** The sentence for the answers' bodies ('' when every node answered). */
export function nodesText(...bodies) {
  const down = new Set(), bucket = new Set();
  for (const b of bodies) {
    for (const n of b?.unanswered_nodes || []) down.add(n);
    for (const n of b?.from_bucket_nodes || []) bucket.add(n);
  }
  if (!down.size) return '';
  const list = s => [...s].sort().join(', ');
  const missing = new Set([...down].filter(n => !bucket.has(n)));
  const parts = [];
  if (bucket.size) parts.push(`the share of ${list(bucket)} comes from ${bucket.size > 1 ? 'their copies' : 'its copy'} in the bucket (${bucket.size > 1 ? 'their' : 'its'} last minute or so may be missing)`);
  if (missing.size) parts.push(`the share of ${list(missing)} is missing`);
  return `Node${down.size > 1 ? 's' : ''} ${list(down)} did not answer: ${parts.join('; ')}.`;
}

/** A note for the answers' bodies, or null when every node answered. */
export function nodesNote(...bodies) {
  const text = nodesText(...bodies);
  return text ? el('p.note.nodes-note', { role: 'status' }, text) : null;
}
