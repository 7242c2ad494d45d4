// Applies the theme chosen with the toggle before the first paint (a classic script in <head>, so no flash of the
// other theme). Without a choice the page follows prefers-color-scheme through CSS alone.
"use strict";
try {
  const chosen = localStorage.getItem("corral.theme");
  if (chosen === "light" || chosen === "dark") document.documentElement.dataset.theme = chosen;
} catch (_) {
  // storage disabled: follow the system theme
}
