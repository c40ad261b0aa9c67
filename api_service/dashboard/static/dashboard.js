// Payout Sandbox dashboard: a little plain JavaScript, no build step.
// - statuses on the payouts list, the payout page and the webhook deliveries refresh every 2 s
//   without a reload (a settled payout page every 10 s while it offers an action another tab
//   may take); a status that changes is said in the page's polite live region (#announcer);
// - the scenario table fills the payout form; the destination type shows its institution list.
"use strict";

(function () {
  const POLL_MS = 2000;
  const SLOW_POLL_MS = 10000;

  // Calls `refresh` while the tab is visible, first after POLL_MS, then after the number of ms
  // it returns, until it returns false.
  function poll(refresh) {
    const tick = async () => {
      let next = POLL_MS;
      if (!document.hidden) {
        try {
          next = await refresh();
          if (next === false) return;
        } catch (error) {
          next = POLL_MS; // a network blip: try again soon
        }
      }
      window.setTimeout(tick, next);
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

  // The status shown by the badge inside `element` (an element marked data-announce).
  function statusIn(element) {
    const badge = element.querySelector("[data-status]");
    return badge ? badge.dataset.status : null;
  }

  // "Payout ref-123 is now SUCCESS.": what `element`'s data-announce names, with its status.
  function statusSentence(element) {
    return element.dataset.announce + " is now " + statusIn(element) + ".";
  }

  // Says `sentences` to a screen reader (the live region reads out its new text).
  function announce(sentences) {
    const region = document.getElementById("announcer");
    if (region && sentences.length > 0) region.textContent = sentences.join(" ");
  }

  // The payouts list: the badge of each row shown, asked by the rows' ids (a payout that has
  // left the list's status filter shows its new status).
  function liveStatuses(table) {
    const rows = table.querySelectorAll("tr[data-payout-id]");
    if (rows.length === 0) return;
    const ids = new URLSearchParams(Array.from(rows, (row) => ["id", row.dataset.payoutId]));
    poll(async () => {
      const url = table.dataset.liveStatuses + "?" + ids;
      const response = await fetchOrReload(url, "application/json");
      if (response === null) return false;
      const { statuses } = await response.json();
      const changed = [];
      for (const row of rows) {
        const status = statuses[row.dataset.payoutId];
        const badge = row.querySelector("[data-status]");
        if (status && badge && badge.dataset.status !== status) {
          badge.dataset.status = status;
          badge.textContent = status;
          badge.className = "status status-" + status.toLowerCase().replace("_", "-");
          changed.push(statusSentence(row));
        }
      }
      announce(changed);
      return POLL_MS;
    });
  }

  // Where the focus is in `container`, in terms a new rendering of it has too: the nearest id
  // around the focused element (or its own: then it is found by it alone, whatever its text
  // became), its tag and its text.
  function focusedPlace(container) {
    const focused = document.activeElement;
    if (!focused || focused === container || !container.contains(focused)) return null;
    const around = focused.closest("[id]");
    const id = around && container.contains(around) ? around.id : null;
    return { id, own: around === focused, tag: focused.tagName, text: focused.textContent };
  }

  // Focus the element at `place` in the new rendering of `container`; if the refresh removed
  // it, the element the container's data-refocus names (its heading), never <body>.
  function refocus(container, place) {
    const scope = place.id ? container.querySelector("#" + CSS.escape(place.id)) : container;
    const match =
      scope &&
      (place.own
        ? scope
        : [scope, ...scope.querySelectorAll(place.tag)].find(
            (element) => element.tagName === place.tag && element.textContent === place.text,
          ));
    const target = match || document.querySelector(container.dataset.refocus);
    if (target) target.focus({ preventScroll: true });
  }

  // Each element marked data-announce in `container`, by its id: its status and its name.
  function announcedStatuses(container) {
    return new Map(
      Array.from(container.querySelectorAll("[data-announce][id]"), (element) => [
        element.id,
        { status: statusIn(element), name: element.dataset.announce },
      ]),
    );
  }

  // The sentences for what changed status in `container` since `before`, and for what left it
  // (a delivery that is no longer in the tab's status: its row is gone).
  function statusChanges(container, before) {
    const now = announcedStatuses(container);
    const changed = Array.from(now.keys())
      .filter((id) => before.has(id) && before.get(id).status !== now.get(id).status)
      .map((id) => statusSentence(container.querySelector("#" + CSS.escape(id))));
    const left = Array.from(before.entries())
      .filter(([id]) => !now.has(id))
      .map(([, was]) => was.name + " is no longer " + was.status + ".");
    return changed.concat(left);
  }

  // Where each part of `container` that scrolls sideways (a wide table's card) was scrolled to.
  function scrolledAcross(container) {
    return Array.from(container.querySelectorAll("[id]"))
      .filter((element) => element.scrollLeft > 0)
      .map((element) => [element.id, element.scrollLeft]);
  }

  // A server-rendered part of a page that refreshes itself until it says it is settled (and,
  // slowly, after that while it offers an action). What the user had open or focused in it
  // stays so (scrolled across too), and a status it changes is announced.
  function liveFragment(container) {
    poll(async () => {
      const response = await fetchOrReload(container.dataset.liveFragment, "text/html");
      if (response === null) return false;
      const html = await response.text();
      if (html !== container.dataset.lastHtml) {
        const open = new Set(
          Array.from(container.querySelectorAll("details[open]"), (details) => details.id),
        );
        const focused = focusedPlace(container);
        const before = announcedStatuses(container);
        const scrolled = scrolledAcross(container);
        container.innerHTML = html; // our own template's output, escaped on the server
        container.dataset.lastHtml = html;
        for (const id of open) {
          const details = id && document.getElementById(id);
          if (details) details.open = true;
        }
        for (const [id, left] of scrolled) {
          const element = document.getElementById(id);
          if (element) element.scrollLeft = left;
        }
        if (focused) refocus(container, focused);
        announce(statusChanges(container, before));
      }
      const live = container.querySelector("[data-live]");
      if (!live || live.dataset.live !== "off") return POLL_MS;
      return "actionable" in live.dataset ? SLOW_POLL_MS : false;
    });
  }

  function payoutForm(form) {
    const accountNumber = form.querySelector("[name=account_number]");
    const amount = form.querySelector("[name=amount]");
    const threshold = Number(form.dataset.reviewThreshold);
    // No radio checked (a form posted with a type the API refused): a wallet, as the form starts.
    const destType = () => form.querySelector("[name=dest_type]:checked")?.value ?? "WALLET";
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
        for (const other of document.querySelectorAll("[data-scenario]")) {
          other.setAttribute("aria-pressed", "false");
        }
        button.closest("tr").classList.add("picked");
        button.setAttribute("aria-pressed", "true");
        accountNumber.focus();
      });
    }
  }

  // An action's notice ("Balance topped up.") is asked for by the redirect's ?done=: once it
  // is shown, the address forgets it, so that a reload or a bookmark does not say it again.
  function forgetNotice() {
    const url = new URL(window.location.href);
    if (!url.searchParams.has("done")) return;
    url.searchParams.delete("done");
    url.searchParams.delete("count");
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  }

  document.addEventListener("DOMContentLoaded", () => {
    forgetNotice();
    // A refused form: its first refused field takes the focus, so that a screen reader reads
    // the field and its error (aria-describedby); left on the page, nothing was said.
    const refused = document.querySelector("[aria-invalid=true]");
    if (refused) refused.focus();
    const table = document.querySelector("[data-live-statuses]");
    if (table) liveStatuses(table);
    for (const container of document.querySelectorAll("[data-live-fragment]")) {
      liveFragment(container);
    }
    const form = document.getElementById("new-payout");
    if (form) payoutForm(form);
  });
})();
