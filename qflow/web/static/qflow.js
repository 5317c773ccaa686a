/* qflow console: helpers shared by the pages. Data never goes through innerHTML: every
   text a user wrote (names, params, errors, logs, results) is set with textContent. */
"use strict";
window.Qflow = window.Qflow || {};
(function (Q) {
  const SVG = "http://www.w3.org/2000/svg";

  /** An HTML element with attributes and children (strings become text nodes). */
  Q.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
    }
    return node;
  };

  /** An SVG element with attributes; ``text`` (optional) becomes its text content. */
  Q.svg = function (tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    if (text !== undefined) node.textContent = String(text);
    return node;
  };

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  /** GET a JSON document; rejects with the server's one-line error. */
  Q.getJSON = async function (url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return body;
  };

  Q.ms = (iso) => (iso ? Date.parse(iso) : null);

  /** "1.2 s", "3 m 04 s", "2 h 05 m" */
  Q.duration = function (seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
    if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(2) : seconds.toFixed(1)} s`;
    const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
    if (m < 60) return `${m} m ${String(s).padStart(2, "0")} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
  };

  Q.span = function (start, end) {
    if (!start) return "";
    const stop = end ? Q.ms(end) : Date.now();
    return Q.duration((stop - Q.ms(start)) / 1000);
  };

  /** Local time of an ISO string, compact. */
  Q.time = function (iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };

  Q.STATES = ["pending", "queued", "running", "retrying", "sensing", "succeeded", "failed",
              "upstream_failed", "skipped", "canceled"];

  /** Show every <time data-iso> in the visitor's local time. */
  Q.localTimes = function (root) {
    for (const node of (root || document).querySelectorAll("time[data-iso]")) {
      node.textContent = Q.time(node.getAttribute("data-iso"));
      node.title = node.getAttribute("data-iso");
    }
  };
  document.addEventListener("DOMContentLoaded", () => Q.localTimes());
})(window.Qflow);
