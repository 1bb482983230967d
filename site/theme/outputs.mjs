// Notebook outputs and equations of the physeg site renderer: MIME bundles
// (figures, HTML tables, Markdown/LaTeX typeset with KaTeX, text), streams,
// errors, and the KaTeX HTML MyST stored for the page's own equations.

import MarkdownIt from 'markdown-it';
import katex from 'katex';
import { copyPublic, escapeHtml, fetchOk, joinText, problem, stripAnsi, writeInline, CDN } from './common.mjs';

// ------------------------------------------------------------ notebook outputs

const IMAGE_TYPES = ['image/svg+xml', 'image/png', 'image/jpeg', 'image/gif'];
const MIME_PRIORITY = [...IMAGE_TYPES, 'text/html', 'text/markdown', 'text/latex', 'text/plain'];

// Markdown and LaTeX outputs (IPython.display.Markdown / Latex) are typeset here:
// maths first (KaTeX, as MyST does for the notebook's own cells), then markdown.
const markdown = new MarkdownIt({ html: true, linkify: false });
const MATH_RE = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\$((?:\\\$|[^$\n])+?)\$|\\\(([\s\S]+?)\\\)/g;

function typeset(tex, displayMode, page) {
  try {
    const html = katex.renderToString(tex, { displayMode, throwOnError: true, output: 'htmlAndMathml' });
    return displayMode ? `<div class="math-display">${html}</div>` : `<span class="math-inline">${html}</span>`;
  } catch (err) {
    problem(page, 'math-error', `${err.message} in output: ${tex}`);
    const tag = displayMode ? 'div' : 'span';
    return `<${tag} class="math-error" title="${escapeHtml(err.message)}"><code>${escapeHtml(tex)}</code></${tag}>`;
  }
}

function renderMarkdownWithMath(text, page) {
  const pieces = [];
  const source = text.replace(MATH_RE, (match, dd, br, d, par) => {
    const display = dd !== undefined || br !== undefined;
    pieces.push(typeset((dd ?? br ?? d ?? par).trim(), display, page));
    return `PHYSEGMATH${pieces.length - 1}X`;
  });
  return markdown
    .render(source)
    .replace(/<p>PHYSEGMATH(\d+)X<\/p>/g, (m, i) => pieces[Number(i)]) // a display equation alone in its paragraph
    .replace(/PHYSEGMATH(\d+)X/g, (m, i) => pieces[Number(i)]);
}

async function bundleText(entry) {
  if (entry.content !== undefined) return joinText(entry.content);
  if (entry.path) return (await fetchOk(CDN + entry.path)).text();
  return '';
}

async function renderMimeBundle(data, page) {
  const types = Object.keys(data || {});
  const chosen = MIME_PRIORITY.find((t) => types.includes(t));
  if (!chosen) {
    if (types.length) problem(page, 'unsupported-output', `no renderer for ${types.join(', ')}`);
    return '';
  }
  const entry = data[chosen];
  if (IMAGE_TYPES.includes(chosen)) {
    let src;
    if (entry.path) src = await copyPublic(entry.path, page);
    else src = await writeInline(entry.content, chosen, chosen !== 'image/svg+xml');
    const alt = data['text/plain'] ? stripAnsi(await bundleText(data['text/plain'])) : 'figure';
    return `<img class="output-image" src="${escapeHtml(src)}" alt="${escapeHtml(alt)}" loading="eager">`;
  }
  const text = await bundleText(entry);
  if (chosen === 'text/html') return `<div class="output-html">${text}</div>`;
  if (chosen === 'text/markdown') return `<div class="output-markdown">${renderMarkdownWithMath(text, page)}</div>`;
  if (chosen === 'text/latex') {
    // IPython's Latex('$$...$$') or Latex('text with $x$'): delimited maths; bare LaTeX: one display equation
    const tex = text.trim();
    const delimited = /\$|\\\(|\\\[/.test(tex);
    return `<div class="output-latex">${delimited ? renderMarkdownWithMath(tex, page) : typeset(tex, true, page)}</div>`;
  }
  return `<pre class="output-text">${escapeHtml(stripAnsi(text))}</pre>`;
}

async function renderJupyterOutput(out, page) {
  switch (out.output_type) {
    case 'stream':
      // a page reads as prose, tables and figures: stderr (warnings, progress bars) is reported
      if (out.name === 'stderr') problem(page, 'stderr-output', stripAnsi(joinText(out.text)).trim().split('\n')[0].slice(0, 200));
      return `<pre class="output-stream ${escapeHtml(out.name || 'stdout')}">${escapeHtml(stripAnsi(joinText(out.text)))}</pre>`;
    case 'error': {
      const tb = Array.isArray(out.traceback) ? out.traceback.join('\n') : joinText(out.traceback);
      const text = tb || `${out.ename}: ${out.evalue}`;
      return `<pre class="output-error">${escapeHtml(stripAnsi(text))}</pre>`;
    }
    case 'execute_result':
    case 'display_data':
    case 'update_display_data':
      return renderMimeBundle(out.data, page);
    default:
      problem(page, 'unsupported-output', `output_type ${out.output_type}`);
      return '';
  }
}

export async function renderOutputNode(node, page) {
  const outs = Array.isArray(node.jupyter_data) ? node.jupyter_data : node.jupyter_data ? [node.jupyter_data] : [];
  // older MyST versions kept a `data` array on the output node
  if (!outs.length && Array.isArray(node.data)) outs.push(...node.data);
  const parts = [];
  for (const out of outs) parts.push(await renderJupyterOutput(out, page));
  return `<div class="output">${parts.join('\n')}</div>`;
}

// ------------------------------------------------------------ math

export function renderMath(node, page) {
  const display = node.type === 'math';
  const id = node.html_id || node.identifier || node.label;
  const idAttr = id ? ` id="${escapeHtml(id)}"` : '';
  if (node.error || !node.html) {
    const message = node.message || 'equation was not typeset';
    problem(page, 'math-error', `${message} in: ${node.value}`);
    const tag = display ? 'div' : 'span';
    return `<${tag} class="math-error"${idAttr} title="${escapeHtml(message)}"><code>${escapeHtml(node.value)}</code></${tag}>`;
  }
  if (!display) return `<span class="math-inline">${node.html}</span>`;
  const number = node.enumerator && node.enumerated !== false ? `<span class="eqno">(${escapeHtml(node.enumerator)})</span>` : '';
  return `<div class="math-display"${idAttr}>${node.html}${number}</div>`;
}

