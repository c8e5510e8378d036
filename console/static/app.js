// Auto-refresh: reload the page every 15 s while the box is ticked (remembered in this
// browser), but not while the operator is at something: a control or link has the focus
// (as it always has for a keyboard user) or dead letters are ticked.
(function () {
  var box = document.getElementById("autorefresh");
  if (!box) return;
  box.checked = localStorage.getItem("leadbridge-refresh") === "1";
  box.addEventListener("change", function () { localStorage.setItem("leadbridge-refresh", box.checked ? "1" : "0"); });
  function busy() {
    var f = document.activeElement;
    return (f && f !== document.body && f !== box) || document.querySelector("input[name=sel]:checked") !== null;
  }
  setInterval(function () { if (box.checked && !busy()) location.reload(); }, 15000);
})();
