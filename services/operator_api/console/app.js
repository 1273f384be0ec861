// The console's shell: the signed-in key, the hash router and the navigation.

import { restoreSession, signIn, signOut } from "./api.js";
import {
  adjustmentsPage,
  customerPage,
  deadLetterPage,
  deadLettersPage,
  exchangePage,
  findCustomerPage,
  findExchangePage,
  jobPage,
  jobsPage,
  moneyPage,
  reconciliationPage,
  signInPage,
  statementPage,
  trialBalancePage,
} from "./pages.js";

// [pattern of path segments, page]; ":" marks a parameter.
const ROUTES = [
  [["customers"], findCustomerPage],
  [["customers", ":"], customerPage],
  [["customers", ":", "balances", ":", "statement"], statementPage],
  [["customers", ":", "balances", ":", "deposit"], (ctx) => moneyPage(ctx, "deposit")],
  [["customers", ":", "balances", ":", "withdrawal"], (ctx) => moneyPage(ctx, "withdrawal")],
  [["exchanges"], findExchangePage],
  [["exchanges", ":", ":"], exchangePage],
  [["trial-balance"], trialBalancePage],
  [["reconciliation"], reconciliationPage],
  [["adjustments"], adjustmentsPage],
  [["jobs"], jobsPage],
  [["jobs", ":"], jobPage],
  [["dead-letters"], deadLettersPage],
  [["dead-letters", ":", ":"], deadLetterPage],
];

let session = null;
let generation = 0;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [pathPart, queryPart = ""] = raw.split("?", 2);
  const segments = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  return { segments, query: new URLSearchParams(queryPart) };
}

function match(segments) {
  for (const [pattern, page] of ROUTES) {
    if (pattern.length !== segments.length) continue;
    const params = [];
    if (pattern.every((part, i) => (part === ":" ? params.push(segments[i]) : part === segments[i]))) {
      return { page, params };
    }
  }
  return null;
}

function showNav() {
  const nav = document.getElementById("nav");
  nav.hidden = session === null;
  document.getElementById("signed-in-as").textContent =
    session === null ? "" : `Key ${session.publicKey.slice(0, 8)}…`;
  for (const link of nav.querySelectorAll("a")) {
    const here = location.hash.startsWith(link.getAttribute("href"));
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route() {
  const mine = ++generation;
  const view = document.getElementById("view");
  const ctx = {
    view,
    session,
    params: [],
    query: new URLSearchParams(),
    current: () => mine === generation,
    navigate: (hash) => {
      location.hash = hash;
    },
    signIn: async (publicKey, secretKey) => {
      session = await signIn(publicKey, secretKey);
      const wanted = sessionStorage.getItem("walletConsole.after") ?? "#/customers";
      sessionStorage.removeItem("walletConsole.after");
      if (location.hash === wanted) route();
      else location.hash = wanted;
    },
  };
  showNav();
  if (session === null) {
    if (location.hash && !location.hash.startsWith("#/sign-in")) {
      sessionStorage.setItem("walletConsole.after", location.hash);
    }
    signInPage(ctx);
    return;
  }
  const { segments, query } = parseHash();
  const found = match(segments.length === 0 ? ["customers"] : segments);
  if (found === null) {
    view.replaceChildren();
    const p = document.createElement("p");
    p.textContent = "No such page.";
    view.append(p);
    return;
  }
  ctx.params = found.params;
  ctx.query = query;
  await found.page(ctx);
}

document.getElementById("sign-out").addEventListener("click", () => {
  signOut();
  session = null;
  generation++;
  location.hash = "#/sign-in";
  route();
});

window.addEventListener("hashchange", route);
session = await restoreSession();
route();
