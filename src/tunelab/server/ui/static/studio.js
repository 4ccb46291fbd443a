// tunelab studio: the little behaviour htmx does not give. No inline script anywhere (CSP).
// Forms and buttons with data-confirm ask first.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);

// Chat: the conversation lives in the page. Each question sends the turns before it; saving
// sends the conversation (the first model's answers) as one chat example.
function chatTurns() {
  return Array.prototype.map.call(document.querySelectorAll("#conversation .turn"), function (turn) {
    var answers = {};
    turn.querySelectorAll(".panel[data-model]").forEach(function (panel) {
      answers[panel.getAttribute("data-model")] = panel.querySelector(".model-answer").textContent;
    });
    var system = turn.querySelector(".system-message");
    return {
      prompt: turn.querySelector(".user-message").textContent,
      system: system ? system.textContent : "",
      first: (turn.querySelector(".panel[data-model]") || {getAttribute: function () { return ""; }}).getAttribute("data-model"),
      answers: answers
    };
  });
}

function savedConversation() {
  var turns = chatTurns();
  var messages = turns.length && turns[0].system ? [{role: "system", content: turns[0].system}] : [];
  turns.forEach(function (turn) {
    var answer = turn.answers[turn.first];
    if (answer && answer.trim()) {
      messages.push({role: "user", content: turn.prompt});
      messages.push({role: "assistant", content: answer});
    }
  });
  return messages;
}

document.addEventListener("htmx:configRequest", function (event) {
  var id = event.detail.elt.id;
  if (id === "chat-form") {
    event.detail.parameters["history"] = JSON.stringify(chatTurns());
  } else if (id === "save-chat") {
    event.detail.parameters["conversation"] = JSON.stringify(savedConversation());
  }
});

// The server answers a question it accepted with the `chat-asked` event: empty the box.
document.addEventListener("chat-asked", function () {
  var prompt = document.getElementById("prompt");
  if (prompt) { prompt.value = ""; prompt.focus(); }
});

document.addEventListener("click", function (event) {
  var target = event.target;
  if (target.id === "clear-chat") {
    document.getElementById("conversation").replaceChildren();
    document.getElementById("save-result").replaceChildren();
  } else if (target.classList.contains("copy-answer")) {
    copyText(target.closest(".panel").querySelector(".model-answer").textContent, target);
  }
});

function copyText(text, button) {
  var done = function () { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
    return;
  }
  // Plain HTTP on another host has no clipboard API: copy through a selected text area.
  var area = document.createElement("textarea");
  area.value = text;
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  done();
}

// The job form shows the settings of the chosen training method only (all of them without
// script; the server reads only the chosen method's).
function showMethodSettings() {
  var picker = document.getElementById("training-method");
  if (!picker) { return; }
  document.querySelectorAll(".method-settings").forEach(function (box) {
    box.hidden = box.getAttribute("data-method") !== picker.value;
  });
}
document.addEventListener("change", function (event) {
  if (event.target.id === "training-method") { showMethodSettings(); }
});
document.addEventListener("DOMContentLoaded", showMethodSettings);
