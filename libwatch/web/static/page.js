// libwatch management page: confirm each control, refresh every few seconds unless the admin is typing.
"use strict";
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
const url = new URL(window.location.href);
if (url.searchParams.has("notice")) {
  url.searchParams.delete("notice");
  window.history.replaceState(null, "", url);
}
const every = Number(document.body.dataset.refresh || 0) * 1000;
if (every > 0) {
  window.setInterval(() => {
    const active = document.activeElement;
    if (!active || !active.matches("input, select, textarea")) window.location.reload();
  }, every);
}
