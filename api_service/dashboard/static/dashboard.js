// Payout Sandbox dashboard: a little plain JavaScript, no build step.
// - statuses on the payouts list and the payout page refresh every 2 s without a reload;
// - the scenario table fills the payout form; the destination type shows its institution list.
"use strict";

(function () {
  const POLL_MS = 2000;

  // Calls `refresh` every POLL_MS while the tab is visible, until it returns false.
  function poll(refresh) {
    const tick = async () => {
      if (!document.hidden) {
        try {
          if ((await refresh()) === false) return;
        } catch (error) {
          // A network blip: try again at the next tick.
        }
      }
      window.setTimeout(tick, POLL_MS);
    };
    window.setTimeout(tick, POLL_MS);
  }

  async function fetchOrReload(url, accept) {
    const response = await fetch(url, {
      headers: { Accept: accept },
      credentials: "same-origin",
      cache: "no-store",
    });
    if (!response.ok || response.redirected) {
      window.location.reload(); // signed out, or the page is gone: show why
      return null;
    }
    return response;
  }

  // The payouts list: the badge of each row shown.
  function liveStatuses(table) {
    poll(async () => {
      const response = await fetchOrReload(table.dataset.liveStatuses, "application/json");
      if (response === null) return false;
      const { statuses } = await response.json();
      for (const row of table.querySelectorAll("tr[data-payout-id]")) {
        const status = statuses[row.dataset.payoutId];
        const badge = row.querySelector("[data-status]");
        if (status && badge && badge.dataset.status !== status) {
          badge.dataset.status = status;
          badge.textContent = status;
          badge.className = "status status-" + status.toLowerCase().replace("_", "-");
        }
      }
      return true;
    });
  }

  // A server-rendered part of a page that refreshes itself until it says it is settled.
  function liveFragment(container) {
    poll(async () => {
      const response = await fetchOrReload(container.dataset.liveFragment, "text/html");
      if (response === null) return false;
      const html = await response.text();
      if (html !== container.dataset.lastHtml) {
        const open = new Set(
          Array.from(container.querySelectorAll("details[open]"), (details) => details.id),
        );
        container.innerHTML = html; // our own template's output, escaped on the server
        container.dataset.lastHtml = html;
        for (const id of open) {
          const details = id && document.getElementById(id);
          if (details) details.open = true;
        }
      }
      const live = container.querySelector("[data-live]");
      return !(live && live.dataset.live === "off");
    });
  }

  function payoutForm(form) {
    const accountNumber = form.querySelector("[name=account_number]");
    const amount = form.querySelector("[name=amount]");
    const threshold = Number(form.dataset.reviewThreshold);
    const destType = () => form.querySelector("[name=dest_type]:checked").value;
    const showInstitutions = () => {
      for (const field of form.querySelectorAll("[data-dest]")) {
        field.hidden = field.dataset.dest !== destType();
      }
    };
    for (const radio of form.querySelectorAll("[name=dest_type]")) {
      radio.addEventListener("change", showInstitutions);
    }
    showInstitutions();

    for (const button of document.querySelectorAll("[data-scenario]")) {
      button.addEventListener("click", () => {
        const prefix = destType() === "BANK" ? form.dataset.bankPrefix : form.dataset.walletPrefix;
        if (button.dataset.suffix) accountNumber.value = prefix + button.dataset.suffix;
        if (button.dataset.amount) {
          amount.value = button.dataset.amount;
        } else if (Number(amount.value) >= threshold) {
          amount.value = "1500.00"; // under the review threshold, so the suffix decides
        }
        for (const row of document.querySelectorAll(".scenarios tr")) row.classList.remove("picked");
        button.closest("tr").classList.add("picked");
        accountNumber.focus();
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const table = document.querySelector("[data-live-statuses]");
    if (table) liveStatuses(table);
    for (const container of document.querySelectorAll("[data-live-fragment]")) {
      liveFragment(container);
    }
    const form = document.getElementById("new-payout");
    if (form) payoutForm(form);
  });
})();
