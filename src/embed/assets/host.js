// Switchyard host helper: frames the tenant UI and speaks its postMessage
// contract (README, "Embedding"). No build step, no dependencies:
//
//   <script src="https://switchyard.example.com/embed/host.js"></script>
//   const frame = Switchyard.mount(element, {
//     url,                                  // the launch URL your backend minted
//     onTokenNeeded: async () => token,     // your backend mints a new session
//     theme: "auto",                        // "light" | "dark" | "auto"
//     accent: "#3a5bd9",                    // optional
//   });
//   frame.on("navigate", ({ route }) => …); frame.navigate("rules");
(function () {
  "use strict";

  const PREFIX = "switchyard:";

  function mount(element, options) {
    const url = new URL(options.url, window.location.href);
    const origin = url.origin;
    const listeners = {};
    const iframe = document.createElement("iframe");
    iframe.src = url.href;
    iframe.title = options.title || "Alert routing";
    iframe.allow = "clipboard-write";
    iframe.style.display = "block";
    iframe.style.width = "100%";
    iframe.style.border = "0";
    iframe.style.height = `${options.height || 600}px`;

    function post(type, fields) {
      if (iframe.contentWindow) iframe.contentWindow.postMessage({ type: PREFIX + type, ...fields }, origin);
    }

    function emit(name, data) {
      for (const listener of listeners[name] || []) {
        try {
          listener(data);
        } catch (error) {
          console.error(error);
        }
      }
    }

    async function renew() {
      if (typeof options.onTokenNeeded !== "function") return;
      try {
        const token = await options.onTokenNeeded();
        if (token) post("token", { token });
      } catch (error) {
        console.error("Switchyard: onTokenNeeded failed", error);
      }
    }

    function onMessage(event) {
      // Only the frame we created, served from the launch URL's origin.
      if (event.source !== iframe.contentWindow || event.origin !== origin) return;
      const data = event.data;
      if (!data || typeof data.type !== "string" || !data.type.startsWith(PREFIX)) return;
      const name = data.type.slice(PREFIX.length);
      if (name === "resize" && Number.isFinite(data.height)) iframe.style.height = `${Math.ceil(data.height)}px`;
      if (name === "session-expiring") renew();
      emit(name, data);
    }

    window.addEventListener("message", onMessage);
    // The UI listens from its first script, so init after load reaches it.
    iframe.addEventListener("load", () => {
      const init = { theme: options.theme || "auto" };
      if (options.accent) init.accent = options.accent;
      post("init", init);
    });
    element.appendChild(iframe);

    return {
      iframe,
      on(name, listener) {
        (listeners[name] = listeners[name] || []).push(listener);
        return this;
      },
      navigate(route) {
        post("navigate", { route });
      },
      setTheme(theme, accent) {
        post("init", accent ? { theme, accent } : { theme });
      },
      destroy() {
        window.removeEventListener("message", onMessage);
        iframe.remove();
      },
    };
  }

  window.Switchyard = { mount };
})();
