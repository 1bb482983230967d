// Shared pieces of the physeg site renderer: the content server, the problem
// list, HTML/ANSI text helpers and the files copied into the site.

import fs from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';

const FETCH_TIMEOUT_MS = 60_000;

export const CDN = (process.env.CONTENT_CDN || '').replace(/\/+$/, '');
export const OUT = process.env.BUILD_DIRECTORY;

/** Problems found while rendering; reported in the manifest and on stderr. */
export const problems = [];
export function problem(page, kind, message) {
  problems.push({ page, kind, message });
  console.error(`physeg-site: [${kind}] ${page}: ${message}`);
}

// ---------------------------------------------------------------- utilities

export function escapeHtml(text) {
  return String(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

const ANSI_RE = /\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b[@-Z\\-_]/g;
export function stripAnsi(text) {
  return String(text).replace(ANSI_RE, '');
}

export function joinText(value) {
  return Array.isArray(value) ? value.join('') : String(value ?? '');
}

export async function fetchOk(url) {
  const response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`GET ${url} -> HTTP ${response.status}`);
  return response;
}

export async function fetchJson(urlPath) {
  return (await fetchOk(CDN + urlPath)).json();
}

/** Public files (figures, downloads) already copied: server path -> local file name. */
const copied = new Map();

/** Safe local file name for a content-server path such as `/abc123.png`. */
function localName(serverPath) {
  const base = decodeURIComponent(serverPath.split(/[?#]/)[0]).replace(/^\/+/, '');
  const clean = base.replace(/[^A-Za-z0-9._-]/g, '_');
  return clean && !clean.startsWith('.') ? clean : `file-${crypto.createHash('sha1').update(base).digest('hex').slice(0, 12)}`;
}

/** Copy a file served by the content server into the site; returns its relative href. */
export async function copyPublic(serverPath, page) {
  if (copied.has(serverPath)) return copied.get(serverPath);
  const name = path.posix.join('files', localName(serverPath));
  try {
    const data = Buffer.from(await (await fetchOk(CDN + serverPath)).arrayBuffer());
    await fs.writeFile(path.join(OUT, name), data);
  } catch (err) {
    problem(page, 'missing-file', `${serverPath}: ${err.message}`);
  }
  copied.set(serverPath, name);
  return name;
}

/** Write inline (base64 or text) output content as a file; returns its relative href. */
export async function writeInline(content, contentType, base64) {
  const ext = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/gif': 'gif', 'image/svg+xml': 'svg' }[contentType] || 'bin';
  const data = base64 ? Buffer.from(String(content).replace(/\s+/g, ''), 'base64') : Buffer.from(joinText(content));
  const name = `files/inline-${crypto.createHash('sha256').update(data).digest('hex').slice(0, 20)}.${ext}`;
  await fs.writeFile(path.join(OUT, name), data);
  return name;
}
