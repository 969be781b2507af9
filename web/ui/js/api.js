// Fetch wrapper: JSON in, clear errors out. Optional endpoints (built by
// other components, maybe absent in this build) resolve to null on 404.

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v == null || v === '') continue;
    if (Array.isArray(v)) v.forEach(x => x !== '' && x != null && u.append(k, x)); else u.append(k, v);
  }
  const s = u.toString();
  return s ? '?' + s : '';
}

export async function get(path, params, { signal } = {}) {
  let res;
  try {
    res = await fetch(path + qs(params), { headers: { Accept: 'application/json' }, signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the server (${e.message})`);
  }
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!res.ok) {
    throw new ApiError(res.status, (body && body.error) || `${res.status} ${res.statusText}`);
  }
  if (body === null) throw new ApiError(res.status, `bad JSON from ${path}`);
  return body;
}

const missing = new Set();

/** Like get, but null when the endpoint does not exist in this server. */
export async function optional(path, params, opts) {
  if (missing.has(path)) return null;
  try {
    return await get(path, params, opts);
  } catch (e) {
    if (e.status === 404 || e.status === 405 || e.status === 501) {
      if (!/\/traces\//.test(path)) missing.add(path);
      return null;
    }
    throw e;
  }
}

/** Trace and analysis are cached: moving between views is instant. */
const cache = new Map();
export function cached(key, make) {
  if (!cache.has(key)) {
    const p = make();
    cache.set(key, p);
    p.catch(() => cache.delete(key));
    if (cache.size > 40) cache.delete(cache.keys().next().value);
  }
  return cache.get(key);
}

/** Replaces a cached answer (a trace once all its pages have arrived). */
export function setCached(key, value) { cache.set(key, Promise.resolve(value)); }

export const getTrace = id => cached('t:' + id, () => get(`/api/v1/traces/${encodeURIComponent(id)}`));
export const getAnalysis = id => cached('a:' + id, () => get(`/api/v1/traces/${encodeURIComponent(id)}/analysis`));
