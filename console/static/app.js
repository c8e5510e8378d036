// Auto-refresh: reload the page every 15 s while the box is ticked (remembered in this browser).
(function () {
  var box = document.getElementById("autorefresh");
  if (!box) return;
  box.checked = localStorage.getItem("leadbridge-refresh") === "1";
  box.addEventListener("change", function () { localStorage.setItem("leadbridge-refresh", box.checked ? "1" : "0"); });
  setInterval(function () { if (box.checked && !document.querySelector("input:focus, select:focus")) location.reload(); }, 15000);
})();
