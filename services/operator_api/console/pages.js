// The console's pages. Each renders into `ctx.view` from signed API reads; `ctx.current()` is
// false once the operator has moved to another page, so a late answer or a poll of the old page
// never draws over the new one.

import { path } from "./api.js";
import { errorBox, facts, field, h, replace, table } from "./dom.js";

const STATEMENT_PAGE = 20;
const EXCHANGE_POLL_MS = 1000;
const FINAL_EXCHANGE_STATES = new Set(["settled", "voided", "refused", "failed"]);

function customerHash(customerId) {
  return "#" + path("customers", customerId);
}

function balanceHash(customerId, balanceId, action) {
  return "#" + path("customers", customerId, "balances", balanceId, action);
}

/** A fresh id for one write; kept for every retry of that same write. */
function newRequestId() {
  return "console-" + crypto.randomUUID();
}

function heading(ctx, title) {
  document.title = `${title} · Wallet operator console`;
  return h("h1", {}, title);
}

async function load(ctx, title, read, draw) {
  replace(ctx.view, heading(ctx, title), h("p", { class: "muted", role: "status" }, "Loading…"));
  let data;
  try {
    data = await read();
  } catch (error) {
    if (ctx.current()) replace(ctx.view, heading(ctx, title), errorBox(error));
    return;
  }
  if (ctx.current()) replace(ctx.view, heading(ctx, title), draw(data));
}

// ---- sign in ------------------------------------------------------------------------------

export function signInPage(ctx) {
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card", "aria-label": "Sign in" },
    h(
      "p",
      {},
      "Paste an operator API key. It is kept in this tab only (sessionStorage) and never sent: ",
      "every request is signed with it here, in the browser.",
    ),
    field("Public key", { name: "publicKey", required: true, autocomplete: "off", spellcheck: "false" }),
    field("Secret key", { name: "secretKey", type: "password", required: true, autocomplete: "off" }),
    h("p", {}, h("button", { type: "submit" }, "Sign in")),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    replace(status, h("p", { class: "muted" }, "Checking the key…"));
    try {
      await ctx.signIn(form.publicKey.value.trim(), form.secretKey.value.trim());
    } catch (error) {
      replace(status, errorBox(error));
      button.disabled = false;
    }
  });
  replace(ctx.view, heading(ctx, "Sign in"), form);
}

// ---- customers ----------------------------------------------------------------------------

export function findCustomerPage(ctx) {
  const form = h(
    "form",
    { class: "card", role: "search", "aria-label": "Find a customer" },
    field("Customer id", { name: "customerId", required: true, autocomplete: "off" }),
    h("p", {}, h("button", { type: "submit" }, "Find")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate(customerHash(form.customerId.value.trim()));
  });
  replace(ctx.view, heading(ctx, "Find a customer"), form);
}

export async function customerPage(ctx) {
  const [customerId] = ctx.params;
  await load(
    ctx,
    `Customer ${customerId}`,
    () => ctx.session.get(path("v1", "customers", customerId)),
    (customer) => {
      const outcome = h("div", { "aria-live": "polite" });
      const blocked = customer.blocked;
      const toggle = h(
        "button",
        { type: "button", class: blocked ? "" : "danger" },
        blocked ? "Unblock customer" : "Block customer",
      );
      // One id per click: a block and a later unblock are two requests, never a replay.
      toggle.addEventListener("click", async () => {
        toggle.disabled = true;
        try {
          await ctx.session.post(
            path("v1", "customers", customerId, blocked ? "unblock" : "block"),
            { requestId: newRequestId() },
          );
          if (ctx.current()) await customerPage(ctx);
        } catch (error) {
          replace(outcome, errorBox(error));
          toggle.disabled = false;
        }
      });
      return h(
        "div",
        {},
        facts([
          ["Status", h("span", { class: blocked ? "badge blocked" : "badge active", "data-testid": "customer-status" }, blocked ? "Blocked" : "Active")],
          ["Created", customer.createdAt],
          ["Updated", customer.updatedAt],
        ]),
        h("p", {}, toggle),
        outcome,
        customer.balances.length === 0
          ? h("p", {}, "This customer has no balance.")
          : table(
              "Balances",
              ["Balance", "Currency", "Total", "Held", "Available", "Last seq", "Actions"],
              customer.balances.map((b) => [
                b.balanceId,
                b.currency,
                h("span", { class: "amount" }, b.total),
                h("span", { class: "amount" }, b.held),
                h("span", { class: "amount" }, b.available),
                String(b.seq),
                h(
                  "span",
                  { class: "actions" },
                  h("a", { href: balanceHash(customerId, b.balanceId, "statement") }, "Statement"),
                  h("a", { href: balanceHash(customerId, b.balanceId, "deposit") }, "Deposit"),
                  h("a", { href: balanceHash(customerId, b.balanceId, "withdrawal") }, "Withdraw"),
                ),
              ]),
              { id: "balances" },
            ),
      );
    },
  );
}

// ---- statement ----------------------------------------------------------------------------

export async function statementPage(ctx) {
  const [customerId, balanceId] = ctx.params;
  const after = ctx.query.get("after");
  const query = new URLSearchParams({ limit: String(STATEMENT_PAGE) });
  if (after) query.set("afterSeq", after);
  const base = path("v1", "customers", customerId, "balances", balanceId);
  await load(
    ctx,
    `Statement of ${balanceId}`,
    () => Promise.all([ctx.session.get(base), ctx.session.get(`${base}/statement?${query}`)]),
    ([balance, page]) => {
      const here = balanceHash(customerId, balanceId, "statement");
      return h(
        "div",
        {},
        h("p", {}, h("a", { href: customerHash(customerId) }, `← Customer ${customerId}`)),
        facts([
          ["Currency", balance.currency],
          ["Total", balance.total],
          ["Held", balance.held],
          ["Available", balance.available],
        ]),
        page.lines.length === 0
          ? h("p", {}, "No postings on this page.")
          : table(
              after ? `Postings after seq ${after}` : "Postings from the first",
              ["Seq", "Time", "Kind", "Amount", "Balance after", "Request id", "Comment"],
              page.lines.map((line) => [
                String(line.seq),
                line.time,
                line.kind,
                h("span", { class: "amount" }, line.amount),
                h("span", { class: "amount" }, line.balanceAfter),
                line.requestId,
                line.comment,
              ]),
              { id: "statement" },
            ),
        h(
          "nav",
          { class: "pager", "aria-label": "Statement pages" },
          after ? h("a", { href: here }, "First page") : null,
          page.nextAfterSeq === null
            ? h("span", { class: "muted" }, "Last page")
            : h("a", { href: `${here}?after=${page.nextAfterSeq}`, rel: "next" }, "Next page"),
        ),
      );
    },
  );
}

// ---- deposit and withdrawal, confirmed ---------------------------------------------------

export async function moneyPage(ctx, kind) {
  const [customerId, balanceId] = ctx.params;
  const verb = kind === "deposit" ? "Deposit" : "Withdraw";
  const route = kind === "deposit" ? "deposits" : "withdrawals";
  const base = path("v1", "customers", customerId, "balances", balanceId);
  await load(
    ctx,
    `${verb}: ${balanceId}`,
    () => ctx.session.get(base),
    (balance) => {
      const area = h("div", {});
      const back = h("p", {}, h("a", { href: customerHash(customerId) }, `← Customer ${customerId}`));
      const summary = facts([
        ["Customer", customerId],
        ["Currency", balance.currency],
        ["Total", balance.total],
        ["Available", balance.available],
      ]);

      function askAmount(amount = "", comment = "") {
        const form = h(
          "form",
          { class: "card", "aria-label": `${verb} form` },
          field(`Amount (${balance.currency})`, {
            id: "amount",
            name: "amount",
            required: true,
            inputmode: "decimal",
            autocomplete: "off",
            value: amount,
          }),
          field("Comment (optional)", { id: "comment", name: "comment", autocomplete: "off", value: comment }),
          h("p", {}, h("button", { type: "submit" }, "Review")),
        );
        form.addEventListener("submit", (event) => {
          event.preventDefault();
          confirm(form.amount.value.trim(), form.comment.value.trim());
        });
        replace(area, form);
        form.amount.focus();
      }

      // The request id is made once, when the confirmation is shown, and every press of Confirm
      // sends it again with the same body: a double click, or a retry after an answer that was
      // lost, is the same request to the ledger, which applies it once.
      function confirm(amount, comment) {
        const requestId = newRequestId();
        const body = { requestId, amount };
        if (comment) body.comment = comment;
        const outcome = h("div", { "aria-live": "polite" });
        const go = h("button", { type: "button", class: "primary" }, `Confirm ${kind}`);
        const edit = h("button", { type: "button" }, "Change");
        let inFlight = false;
        go.addEventListener("click", async () => {
          if (inFlight) return;
          inFlight = true;
          go.disabled = edit.disabled = true;
          replace(outcome, h("p", { class: "muted" }, "Sending…"));
          try {
            const done = await ctx.session.post(`${base}/${route}`, body);
            if (!ctx.current()) return;
            if (done.adjustmentId) {
              // Over the four-eyes threshold: kept (202) until a second key approves it.
              replace(
                area,
                h(
                  "div",
                  { class: "card done", role: "status" },
                  h("p", {}, `Waiting for a second operator: ${verb.toLowerCase()} of ${done.amount} ${done.currency} `,
                    `is pending adjustment `, h("code", { "data-testid": "adjustment-id" }, done.adjustmentId), "."),
                  h("p", { class: "muted" }, `Request id ${requestId}`),
                  h("p", {}, h("a", { href: "#/adjustments" }, "Adjustments awaiting approval")),
                ),
              );
              return;
            }
            replace(
              area,
              h(
                "div",
                { class: "card done", role: "status" },
                h("p", {}, `${verb === "Deposit" ? "Deposited" : "Withdrew"} ${done.amount} ${done.currency_code}. `,
                  `Available now: `, h("strong", { "data-testid": "available-after" }, done.balance_current_amount), "."),
                h("p", { class: "muted" }, `Request id ${requestId}`),
                h("p", {}, h("a", { href: customerHash(customerId) }, "Back to the customer")),
              ),
            );
          } catch (error) {
            // No answer, or a 5xx: the request may have been applied. Only the same request may
            // follow (its retry answers what happened); a changed one would be a second payment.
            const unknown = error.status === 0 || error.status >= 500;
            replace(
              outcome,
              errorBox(error),
              h(
                "p",
                { class: "muted" },
                unknown
                  ? "It may have been applied. Confirm again to send the same request (same request id): it is applied at most once."
                  : "Confirm again to send the same request, or change it.",
              ),
            );
            go.disabled = false;
            edit.disabled = unknown;
            inFlight = false;
          }
        });
        edit.addEventListener("click", () => askAmount(amount, comment));
        replace(
          area,
          h(
            "section",
            { class: "card confirm", "aria-labelledby": "confirm-title" },
            h("h2", { id: "confirm-title" }, `Confirm the ${kind}`),
            h(
              "p",
              {},
              `${verb} `,
              h("strong", {}, `${amount} ${balance.currency}`),
              kind === "deposit" ? " into " : " from ",
              `balance ${balanceId} of customer ${customerId}`,
              comment ? ` (“${comment}”)` : "",
              "?",
            ),
            h("p", { class: "muted" }, `Request id ${requestId}`),
            h("p", { class: "buttons" }, go, edit),
            outcome,
          ),
        );
        go.focus();
      }

      askAmount();
      return h("div", {}, back, summary, area);
    },
  );
}

// ---- exchanges ----------------------------------------------------------------------------

export function findExchangePage(ctx) {
  const form = h(
    "form",
    { class: "card", role: "search", "aria-label": "Follow an exchange" },
    field("Customer id", { id: "exchange-customer", name: "customerId", required: true, autocomplete: "off" }),
    field("Exchange id", { id: "exchange-id", name: "exchangeId", required: true, autocomplete: "off" }),
    h("p", {}, h("button", { type: "submit" }, "Follow")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate("#" + path("exchanges", form.customerId.value.trim(), form.exchangeId.value.trim()));
  });
  replace(ctx.view, heading(ctx, "Follow an exchange"), form);
}

export async function exchangePage(ctx) {
  const [customerId, exchangeId] = ctx.params;
  const title = heading(ctx, `Exchange ${exchangeId}`);
  const live = h("p", { class: "muted", role: "status" }, "Loading…");
  const body = h("div", {});
  replace(ctx.view, title, live, body);
  // Polled until the exchange is final (or the operator leaves the page).
  while (ctx.current()) {
    let exchange;
    try {
      exchange = await ctx.session.get(path("v1", "customers", customerId, "exchanges", exchangeId));
    } catch (error) {
      if (!ctx.current()) return;
      replace(body, errorBox(error));
      replace(live, "Stopped following: the last read failed.");
      return;
    }
    if (!ctx.current()) return;
    const final = FINAL_EXCHANGE_STATES.has(exchange.state);
    replace(
      live,
      final ? `Final: ${exchange.state}.` : `Following: updated every ${EXCHANGE_POLL_MS / 1000} s.`,
    );
    const settlement = exchange.settlement ?? {};
    replace(
      body,
      h("p", {}, h("a", { href: customerHash(customerId) }, `← Customer ${customerId}`)),
      facts([
        ["State", h("span", { class: `badge state-${exchange.state}`, "data-testid": "exchange-state" }, exchange.state)],
        ["From", `${exchange.amount} ${exchange.currency_code} (${exchange.source_balance_id})`],
        ["To", `${exchange.target_currency_code} (${exchange.target_balance_id})`],
        ["Order", exchange.order_id],
        ["Paid into the target", settlement.paid ? `${settlement.paid} ${exchange.target_currency_code}` : null],
        ["Detail", exchange.detail ?? settlement.reason ?? null],
        ["Created", exchange.created_at],
        ["Updated", exchange.updated_at],
      ]),
      exchange.settlement
        ? h("details", {}, h("summary", {}, "Settlement"), h("pre", {}, JSON.stringify(exchange.settlement, null, 2)))
        : null,
      exchange.quote
        ? h("details", {}, h("summary", {}, "Quote"), h("pre", {}, JSON.stringify(exchange.quote, null, 2)))
        : null,
    );
    if (final) return;
    await new Promise((resolve) => setTimeout(resolve, EXCHANGE_POLL_MS));
  }
}

// ---- trial balance ------------------------------------------------------------------------

export async function trialBalancePage(ctx) {
  await load(
    ctx,
    "Trial balance",
    () => ctx.session.get("/v1/trial-balance"),
    (trial) => {
      const kinds = [...new Set(trial.currencies.flatMap((c) => Object.keys(c.system)))].sort();
      return h(
        "div",
        {},
        facts([
          ["As of", trial.asOf],
          [
            "Balanced",
            h("span", { class: trial.balanced ? "badge active" : "badge blocked", "data-testid": "trial-balanced" },
              trial.balanced ? "Yes: every currency sums to zero" : "No"),
          ],
        ]),
        trial.currencies.length === 0
          ? h("p", {}, "No postings yet.")
          : table(
              "Per currency: customer balances plus system accounts",
              ["Currency", "Customers", ...kinds, "Total", "Balanced"],
              trial.currencies.map((c) => [
                c.currency,
                h("span", { class: "amount" }, c.customers),
                ...kinds.map((k) => h("span", { class: "amount" }, c.system[k] ?? "0")),
                h("span", { class: "amount" }, c.total),
                c.balanced ? "yes" : "NO",
              ]),
              { id: "trial-balance" },
            ),
      );
    },
  );
}

// ---- reconciliation: the reconciler's last round -------------------------------------------

const DIFFERENCE_FIELDS = new Set(["reason", "expected", "found"]);

/** A check's first difference as one line: why, where, expected against found. */
function differenceText(difference) {
  const where = Object.entries(difference)
    .filter(([key]) => !DIFFERENCE_FIELDS.has(key))
    .map(([key, value]) => `${key}=${value}`)
    .join(" ");
  return `${difference.reason}: ${where}: expected ${difference.expected}, found ${difference.found}`;
}

function reconciliationReport(report) {
  // "fresh" is not a comparison: it says whether the rounds themselves are recent.
  const names = Object.keys(report.checks).filter((name) => name !== "fresh");
  return h(
    "div",
    {},
    facts([
      [
        "Ready",
        h("span", { class: report.ready ? "badge active" : "badge blocked", "data-testid": "reconciliation-ready" },
          report.ready ? "Yes: every check passed" : "No"),
      ],
      ["Last round ended", report.lastRunAt ?? "no round yet"],
      ["Rounds", report.checks.fresh ? "recent" : "STALE: no round ended recently"],
    ]),
    names.length === 0
      ? h("p", {}, "No round has ended yet.")
      : table(
          "Checks of the last round",
          ["Check", "Result", "Status", "Measured", "First difference"],
          names.map((name) => {
            const { status, difference, ...figures } = report.details[name] ?? {};
            const ok = report.checks[name];
            return [
              name,
              h("span", { class: ok ? "badge active" : "badge blocked", "data-testid": `check-${name}` },
                ok ? "ok" : "MISMATCH"),
              status ?? "—",
              Object.entries(figures).map(([key, value]) => `${key}=${value}`).join(" ") || "—",
              difference ? h("code", { "data-testid": `difference-${name}` }, differenceText(difference)) : "—",
            ];
          }),
          { id: "reconciliation-checks" },
        ),
  );
}

export async function reconciliationPage(ctx) {
  const title = "Reconciliation";
  // Read on demand, not polled: every signed read is audited, and a console left open must not
  // fill the audit log. The reconciler answers from its last round, so a read costs nothing.
  const refresh = h("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () => {
    if (ctx.current()) reconciliationPage(ctx);
  });
  replace(ctx.view, heading(ctx, title), h("p", { class: "muted", role: "status" }, "Loading…"));
  let report;
  try {
    report = await ctx.session.get("/v1/reconciliation");
  } catch (error) {
    if (ctx.current()) replace(ctx.view, heading(ctx, title), errorBox(error), h("p", {}, refresh));
    return;
  }
  if (!ctx.current()) return;
  const read = h("p", { class: "muted", role: "status" }, `Read at ${new Date().toISOString()}`);
  replace(ctx.view, heading(ctx, title), read, reconciliationReport(report), h("p", {}, refresh));
}

// ---- adjustments awaiting approval (four eyes) --------------------------------------------

export async function adjustmentsPage(ctx) {
  await load(
    ctx,
    "Adjustments awaiting approval",
    () => ctx.session.get("/v1/adjustments?status=pending&limit=100"),
    (answer) => {
      const outcome = h("div", { "aria-live": "polite" });
      if (answer.adjustments.length === 0) return h("div", {}, h("p", {}, "Nothing awaits approval."), outcome);
      return h(
        "div",
        {},
        outcome,
        table(
          "Pending adjustments, oldest first",
          ["Adjustment", "Kind", "Customer", "Balance", "Amount", "Comment", "Maker key", "Asked at", "Decide"],
          answer.adjustments.map((a) => {
            const approve = h("button", { type: "button", class: "primary" }, "Approve");
            const reject = h("button", { type: "button", class: "danger" }, "Reject");
            const reason = h("input", { id: `reason-${a.adjustmentId}`, autocomplete: "off", placeholder: "why" });
            const decide = async (verb, body) => {
              approve.disabled = reject.disabled = true;
              try {
                await ctx.session.post(path("v1", "adjustments", a.adjustmentId, verb), body);
                if (ctx.current()) await adjustmentsPage(ctx);
              } catch (error) {
                replace(outcome, errorBox(error));
                approve.disabled = reject.disabled = false;
              }
            };
            approve.addEventListener("click", () => decide("approve", {}));
            reject.addEventListener("click", () => decide("reject", { reason: reason.value.trim() }));
            return [
              h("code", {}, a.adjustmentId.slice(0, 8)),
              a.kind,
              h("a", { href: customerHash(a.customerId) }, a.customerId),
              a.balanceId,
              h("span", { class: "amount" }, `${a.amount} ${a.currency}`),
              a.comment,
              h("code", {}, a.maker.slice(0, 8)),
              a.createdAt,
              h(
                "span",
                { class: "actions" },
                approve,
                h("label", { for: `reason-${a.adjustmentId}`, class: "visually-hidden" }, "Reason to reject"),
                reason,
                reject,
              ),
            ];
          }),
          { id: "adjustments" },
        ),
      );
    },
  );
}

// ---- jobs: start a rebuild or a replay, watch its progress ----------------------------------

const ACTIVE_JOB_STATES = new Set(["queued", "running"]);

export async function jobsPage(ctx) {
  await load(
    ctx,
    "Jobs",
    () => ctx.session.get("/v1/jobs?limit=20"),
    (answer) => {
      const outcome = h("div", { "aria-live": "polite" });
      const kind = h(
        "select",
        { id: "job-type", name: "type" },
        h("option", { value: "projection_rebuild" }, "Rebuild the read model (projection_rebuild)"),
        h("option", { value: "replay" }, "Replay the command log into a fresh database (replay)"),
      );
      const into = h("input", { id: "job-into", name: "intoDatabase", autocomplete: "off" });
      const form = h(
        "form",
        { class: "card", "aria-label": "Start a job" },
        h("p", { class: "field" }, h("label", { for: "job-type" }, "Job"), kind),
        h("p", { class: "field" }, h("label", { for: "job-into" }, "Fresh database (replay only)"), into),
        h("p", {}, h("button", { type: "submit" }, "Start job")),
        outcome,
      );
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const button = form.querySelector("button");
        button.disabled = true;
        const body = { type: kind.value };
        if (kind.value === "replay") body.params = { intoDatabase: into.value.trim() };
        try {
          const job = await ctx.session.post("/v1/jobs", body);
          ctx.navigate("#" + path("jobs", job.jobId));
        } catch (error) {
          replace(outcome, errorBox(error));
          button.disabled = false;
        }
      });
      return h(
        "div",
        {},
        form,
        answer.jobs.length === 0
          ? h("p", {}, "No job yet.")
          : table(
              "Recent jobs, newest first",
              ["Job", "Type", "Status", "Progress", "Created"],
              answer.jobs.map((j) => [
                h("a", { href: "#" + path("jobs", j.jobId) }, j.jobId.slice(0, 8)),
                j.type,
                j.status,
                `${j.progress.done} of ${j.progress.total}`,
                j.createdAt,
              ]),
              { id: "jobs" },
            ),
      );
    },
  );
}

export async function jobPage(ctx) {
  const [jobId] = ctx.params;
  const live = h("p", { class: "muted", role: "status" }, "Loading…");
  const body = h("div", {});
  replace(ctx.view, heading(ctx, `Job ${jobId.slice(0, 8)}`), live, body);
  while (ctx.current()) {
    let job;
    try {
      job = await ctx.session.get(path("v1", "jobs", jobId));
    } catch (error) {
      if (!ctx.current()) return;
      replace(body, errorBox(error));
      replace(live, "Stopped following: the last read failed.");
      return;
    }
    if (!ctx.current()) return;
    const active = ACTIVE_JOB_STATES.has(job.status);
    const { done, total, rate, line } = job.progress;
    replace(live, active ? "Following: updated every second." : `Finished: ${job.status}.`);
    replace(
      body,
      h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
      facts([
        ["Type", job.type],
        ["Status", h("span", { class: `badge state-${job.status}`, "data-testid": "job-status" }, job.status)],
        [
          "Progress",
          h(
            "span",
            {},
            h("progress", { max: String(Math.max(total, 1)), value: String(Math.min(done, Math.max(total, 1))), "aria-label": "Job progress" }),
            ` ${done} of ${total}` + (rate ? ` (${rate}/s)` : ""),
          ),
        ],
        ["Last report", line || null],
        ["Error", job.error],
        ["Started", job.startedAt],
        ["Finished", job.finishedAt],
      ]),
      job.result ? h("details", { open: true }, h("summary", {}, "Result"), h("pre", {}, JSON.stringify(job.result, null, 2))) : null,
    );
    if (!active) return;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---- dead letters: list, inspect, redrive or discard -------------------------------------

export async function deadLettersPage(ctx) {
  const partition = ctx.query.get("partition") ?? "0";
  const after = ctx.query.get("after");
  const query = new URLSearchParams({ partition, limit: "50" });
  if (after) query.set("after", after);
  await load(
    ctx,
    `Dead letters, partition ${partition}`,
    () => ctx.session.get(`/v1/dead-letters?${query}`),
    (page) => {
      const form = h(
        "form",
        { class: "card", "aria-label": "Choose a partition" },
        field("Partition", { id: "dlq-partition", name: "partition", inputmode: "numeric", value: partition }),
        h("p", {}, h("button", { type: "submit" }, "Show")),
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        ctx.navigate(`#/dead-letters?partition=${encodeURIComponent(form.partition.value.trim())}`);
      });
      return h(
        "div",
        {},
        form,
        page.deadLetters.length === 0
          ? h("p", {}, "No dead letter on this page.")
          : table(
              "Parked commands",
              ["Offset", "Parked at", "Reason", "Command", "Request id", "Status"],
              page.deadLetters.map((d) => [
                h("a", { href: "#" + path("dead-letters", String(d.partition), String(d.offset)) }, String(d.offset)),
                d.parkedAt,
                d.reason,
                d.commandType ?? "—",
                d.requestId ?? "—",
                d.status,
              ]),
              { id: "dead-letters" },
            ),
        page.nextAfter === null
          ? null
          : h("p", {}, h("a", { href: `#/dead-letters?partition=${partition}&after=${page.nextAfter}`, rel: "next" }, "Next page")),
      );
    },
  );
}

export async function deadLetterPage(ctx) {
  const [partition, offset] = ctx.params;
  const base = path("v1", "dead-letters", partition, offset);
  await load(
    ctx,
    `Dead letter ${partition}/${offset}`,
    () => ctx.session.get(base),
    (letter) => {
      const outcome = h("div", { "aria-live": "polite" });
      const redrive = h("button", { type: "button", class: "primary" }, "Redrive");
      const reason = h("input", { id: "discard-reason", autocomplete: "off" });
      const discard = h("button", { type: "button", class: "danger" }, "Discard");
      const act = async (verb, body) => {
        redrive.disabled = discard.disabled = true;
        try {
          await ctx.session.post(`${base}/${verb}`, body);
          if (ctx.current()) await deadLetterPage(ctx);
        } catch (error) {
          replace(outcome, errorBox(error));
          redrive.disabled = discard.disabled = false;
        }
      };
      redrive.addEventListener("click", () => act("redrive", {}));
      discard.addEventListener("click", () => act("discard", { reason: reason.value.trim() }));
      const open = letter.status === "new";
      return h(
        "div",
        {},
        h("p", {}, h("a", { href: `#/dead-letters?partition=${letter.partition}` }, "← Dead letters")),
        facts([
          ["Status", h("span", { class: "badge", "data-testid": "dead-letter-status" }, letter.status)],
          ["Reason", letter.reason],
          ["Error", letter.error],
          ["Parked at", letter.parkedAt],
          ["From", letter.source ? `${letter.source.topic} ${letter.source.partition}/${letter.source.offset}` : null],
          ["Key", letter.key],
          ["Decodes", letter.decodes ? "yes" : `no${letter.decodeError ? ": " + letter.decodeError : ""}`],
          ["Action", letter.action ? `${letter.action.state} at ${letter.action.at}${letter.action.reason ? ": " + letter.action.reason : ""}` : null],
        ]),
        letter.command ? h("details", {}, h("summary", {}, "Command"), h("pre", {}, JSON.stringify(letter.command, null, 2))) : null,
        open
          ? h(
              "section",
              { class: "card", "aria-labelledby": "act-title" },
              h("h2", { id: "act-title" }, "Act on it (once)"),
              h("p", {}, redrive, " sends its bytes to ledger.commands again (after the cause is fixed)."),
              h("p", { class: "field" }, h("label", { for: "discard-reason" }, "Reason to discard"), reason),
              h("p", {}, discard),
              outcome,
            )
          : outcome,
      );
    },
  );
}
