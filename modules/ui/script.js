// Small A1111 behaviours Gradio has no option for: keyboard shortcuts, hover texts, the --theme flag, and
// A1111's page hooks for extensions' scripts. Loaded in <head> through mount_gradio_app(head=...).

// ---- extensions' scripts (modules/ui/__init__.py head_html) -------------------------------------------------
// Gradio inserts the head's scripts (this one first, then each extension's javascript/*.js) once its app has
// started, after the document has loaded: a DOMContentLoaded (or window load) listener added from then on
// would never run. Such a listener runs once, right after the script that added it, as if the event had
// just fired. A1111's hooks exist too: gradioApp(), onUiLoaded, onUiUpdate, onAfterUiUpdate, onUiTabChange.
(function () {
    "use strict";

    function lateEvent(target, type) {
        if (type === "DOMContentLoaded") {
            return (target === document || target === window) && document.readyState !== "loading";
        }
        return type === "load" && target === window && document.readyState === "complete";
    }

    for (const target of [document, window]) {
        const add = target.addEventListener;
        target.addEventListener = function (type, listener, options) {
            add.call(this, type, listener, options);
            if (listener && lateEvent(this, type)) {
                const self = this;
                setTimeout(function () {
                    const event = new Event(type);
                    typeof listener === "function" ? listener.call(self, event) : listener.handleEvent(event);
                });
            }
        };
    }

    // Gradio 3 put a textbox's <textarea>/<input> straight under its <label>; Gradio 6 wraps it in a <div>. The
    // selectors extensions wrote for the old page ("#txt2img_prompt > label > textarea") are read the new way.
    function gradio3Selector(selector) {
        return typeof selector === "string" ?
            selector.replace(/>\s*label\s*>\s*(textarea|input)/g, "> label $1") : selector;
    }

    window.gradioApp = function () {
        const app = document.querySelector("gradio-app");
        const root = app && app.shadowRoot ? app.shadowRoot : (app || document);
        if (root !== document && !root.getElementById) {
            root.getElementById = function (id) { return document.getElementById(id); };
            const one = root.querySelector.bind(root);
            const all = root.querySelectorAll.bind(root);
            root.querySelector = function (selector) { return one(gradio3Selector(selector)); };
            root.querySelectorAll = function (selector) { return all(gradio3Selector(selector)); };
        }
        return root;
    };

    // A1111's arrays, global as there (an extension may read them or run them with executeCallbacks).
    const hooks = {loaded: window.uiLoadedCallbacks = [], update: window.uiUpdateCallbacks = [],
                   afterUpdate: window.uiAfterUpdateCallbacks = [], tabChange: window.uiTabChangeCallbacks = []};
    let uiLoaded = false;
    let afterUpdateTimer = null;
    let currentTab = null;

    function call(callbacks, ...args) {
        for (const callback of callbacks) {
            try {
                callback(...args);
            } catch (error) {
                console.error("Error running an extension's page hook:", error);
            }
        }
    }

    window.get_uiCurrentTab = function () {
        return document.querySelector("#tabs > .tab-wrapper button.selected, #tabs .tab-container button.selected");
    };
    window.get_uiCurrentTabContent = function () {
        return document.querySelector("#tabs > .tabitem:not([style*='display: none']), " +
                                      "#tabs > div[role=tabpanel]:not([style*='display: none'])");
    };

    // A1111: onUiLoaded(fn) runs fn once the tabs are built (at once if they already are), onUiUpdate(fn) on
    // every change of the page (with the mutation records), onAfterUiUpdate(fn) 200 ms after the changes stop,
    // onUiTabChange(fn) when another top-level tab is picked.
    window.onUiLoaded = function (callback) {
        hooks.loaded.push(callback);
        if (uiLoaded) {
            setTimeout(function () { call([callback]); });
        }
    };
    window.onUiUpdate = function (callback) { hooks.update.push(callback); };
    window.onAfterUiUpdate = function (callback) { hooks.afterUpdate.push(callback); };
    window.onUiTabChange = function (callback) { hooks.tabChange.push(callback); };

    function checkTab() {
        const tab = window.get_uiCurrentTab();
        if (tab && tab !== currentTab) {
            const first = currentTab === null;
            currentTab = tab;
            if (!first) {
                call(hooks.tabChange);
            }
        }
    }

    // Gradio builds a tab's contents when it is first shown; A1111's Gradio built every tab with the page, and
    // extensions' scripts look for their own tab's elements in onUiLoaded. So before onUiLoaded each extension's
    // tab (any top-level tab but the web UI's own), and each tab nested in it (Image Browser's txt2img, img2img,
    // ... tabs), is shown once, out of sight, then the tabs shown before are back.
    // (img2img is not: its inpaint canvas, built out of sight, stays 0 pixels wide; so an extension that sets
    // itself up once in onUiLoaded, as tag autocomplete does, finds txt2img's prompts, not img2img's.)
    const OWN_TABS = new Set(["tab_txt2img", "tab_img2img", "tab_controlnet", "tab_extras", "tab_pnginfo",
                              "tab_modelmerger", "tab_train", "tab_settings", "tab_extensions"]);

    function until(ready, limitMs, then) {
        const started = Date.now();
        (function poll() {
            if (ready() || Date.now() - started > limitMs) {
                then();
            } else {
                setTimeout(poll, 30);
            }
        })();
    }

    function built(panelId) {
        const panel = document.getElementById(panelId);
        return panel && panel.querySelector("*");
    }

    // The buttons of one Tabs block (not of those nested in it); a button names its panel (the tab's elem_id).
    function tabButtons(tabs) {
        return Array.from(tabs.querySelectorAll("button[role=tab][aria-controls]")).filter(function (button) {
            return button.closest(".tabs") === tabs;
        });
    }

    // Shows each button's panel until it is built, and builds the tabs nested in it, then picks `back` again.
    function buildPanels(buttons, back, done) {
        (function next(index) {
            if (index < buttons.length) {
                const panelId = buttons[index].getAttribute("aria-controls");
                const nested = function () {
                    buildNestedTabs(document.getElementById(panelId), function () { next(index + 1); });
                };
                if (built(panelId)) {
                    nested();
                } else {
                    buttons[index].click();
                    until(function () { return built(panelId); }, 3000, nested);
                }
                return;
            }
            if (!back) {
                done();
                return;
            }
            back.click();
            until(function () { return back.getAttribute("aria-selected") === "true"; }, 1000, done);
        })(0);
    }

    // The Tabs blocks directly inside a tab's panel (deeper ones are reached from their own panels).
    function buildNestedTabs(panel, done) {
        const outer = panel && panel.closest(".tabs");
        const nested = panel ? Array.from(panel.querySelectorAll(".tabs")).filter(function (tabs) {
            return tabs.parentElement.closest(".tabs") === outer;
        }) : [];
        (function next(index) {
            if (index >= nested.length) {
                done();
                return;
            }
            const buttons = tabButtons(nested[index]);
            const selected = buttons.find(function (button) { return button.getAttribute("aria-selected") === "true"; });
            buildPanels(buttons, selected, function () { next(index + 1); });
        })(0);
    }

    function buildExtensionTabs(done) {
        const top = document.getElementById("tabs");
        const buttons = top ? tabButtons(top).filter(function (button) {
            const panelId = button.getAttribute("aria-controls");
            return !OWN_TABS.has(panelId) && !built(panelId);
        }) : [];
        const shown = window.get_uiCurrentTab();
        if (!buttons.length || !shown) {
            done();
            return;
        }
        const hide = document.createElement("style");
        hide.textContent = "#tabs > [role=tabpanel] { visibility: hidden !important; }";
        document.head.appendChild(hide);
        buildPanels(buttons, null, function () {
            shown.click();
            until(function () { return window.get_uiCurrentTab() === shown; }, 1000, function () {
                hide.remove();
                done();
            });
        });
    }

    // A1111's page (Gradio 3): a Tabs block's first div holds its tab buttons, in order, and scripts index them so
    // (A1111's get_tab_index did; Image Browser ties each button to its tab by position). Gradio 6 puts a hidden
    // copy of the buttons, which it measures for the overflow menu, first in that div: it is moved to the end.
    function tabButtonsFirst() {
        document.querySelectorAll(".tab-wrapper > .tab-container.visually-hidden:not(:last-child)")
            .forEach(function (copy) { copy.parentElement.appendChild(copy); });
    }

    // Elements added or removed (not every style change: that would cost the page on each progress tick);
    // a tab change is seen on the tab buttons' classes.
    let starting = false;
    new MutationObserver(function (mutations) {
        tabButtonsFirst();
        if (!starting && document.getElementById("txt2img_prompt")) {
            starting = true;
            buildExtensionTabs(function () {
                uiLoaded = true;
                call(hooks.loaded);
                const tabList = document.querySelector("#tabs [role=tablist]");
                if (tabList) {
                    checkTab();
                    new MutationObserver(checkTab).observe(tabList, {subtree: true, attributes: true,
                                                                     attributeFilter: ["class"]});
                }
            });
        }
        if (hooks.update.length) {
            call(hooks.update, mutations);
        }
        if (hooks.afterUpdate.length) {
            clearTimeout(afterUpdateTimer);
            afterUpdateTimer = setTimeout(function () { call(hooks.afterUpdate); }, 200);
        }
    }).observe(document.documentElement, {childList: true, subtree: true});
})();

// ---- keyboard shortcuts, hover texts, --theme --------------------------------------------------------------
(function () {
    "use strict";

    const settings = window.webuiSettings || {};
    if (settings.theme) {
        // A1111's way: Gradio picks the theme from the ?__theme= query parameter.
        const url = new URL(window.location.href);
        if (!url.searchParams.has("__theme")) {
            url.searchParams.set("__theme", settings.theme);
            window.location.replace(url.href);
        }
    }

    function visibleButton(id) {
        const button = document.getElementById(id);
        return button && button.offsetParent !== null ? button : null;
    }

    // The generation tab on screen (txt2img or img2img), if one is.
    function shownGenerationTab() {
        for (const tab of ["txt2img", "img2img"]) {
            if (visibleButton(tab + "_generate") || visibleButton(tab + "_interrupt")) {
                return tab;
            }
        }
        return null;
    }

    // Esc anywhere on the page interrupts the shown tab's job, as in A1111 (not while one of our popups is open:
    // Esc is theirs then); Ctrl+Enter generates, Alt+Enter skips, in <tab>_prompt and <tab>_neg_prompt.
    document.addEventListener("keydown", function (event) {
        const box = event.target && event.target.closest ? event.target.closest("[id$='_prompt']") : null;
        const match = box && box.id.match(/^(.+?)_(neg_)?prompt$/);
        if (!match) {
            const popupOpen = Array.from(document.querySelectorAll(".popup-dialog"))
                .some(function (popup) { return popup.offsetParent !== null; });
            const tab = event.key === "Escape" && !popupOpen ? shownGenerationTab() : null;
            const button = tab ? visibleButton(tab + "_interrupt") : null;
            if (button) {
                event.preventDefault();
                button.click();
            }
            return;
        }
        const tab = match[1];
        let button = null;
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
            button = visibleButton(tab + "_generate");
        } else if (event.key === "Enter" && event.altKey) {
            button = visibleButton(tab + "_skip");
        } else if (event.key === "Escape") {
            button = visibleButton(tab + "_interrupt");
        }
        if (button) {
            event.preventDefault();
            button.click();
        }
    }, true);

    // A1111's `titles` (hints.js), global: extensions add to it or replace it (`titles = {...titles, ...}`); here
    // by element id, and in a1111.js by an element's text as in A1111.
    window.titles = Object.assign({
        "paste": "Read generation parameters from prompt or last generation if prompt is empty into user interface.",
        "refresh_sd_model_checkpoint": "Refresh the list of checkpoints",
        "interrogate": "Interrogate CLIP - use CLIP neural network to create a text describing the image, and put it " +
            "into the prompt field",
        "deepbooru": "Interrogate DeepBooru - use DeepBooru neural network to create a text describing the image, " +
            "and put it into the prompt field",
        "txt2img_random_seed": "Set seed to -1, which will cause a new random number to be used every time",
        "txt2img_reuse_seed": "Reuse seed from last generation, mostly useful if it was randomized",
        "txt2img_random_subseed": "Set variation seed to -1 (random)",
        "txt2img_reuse_subseed": "Reuse variation seed from last generation",
        "txt2img_res_switch_btn": "Switch width/height",
        "txt2img_generate": "Generate (Ctrl+Enter)",
        "txt2img_interrupt": "Stop processing this job (Esc)",
        "txt2img_skip": "Skip the current batch (Alt+Enter)",
        "refresh_sd_vae": "Refresh the list of VAEs",
        "txt2img_style_apply": "Apply all selected styles to the prompts, and clear the selection",
        "txt2img_style_create": "Edit styles",
        "txt2img_style_copy_from_prompt": "Copy the main prompts into the style",
        "txt2img_extra_sort_order": "Invert sort order",
        "txt2img_extra_refresh": "Refresh the lists of textual inversions, checkpoints and LoRAs",
        "txt2img_tab": "Send the image's generation parameters to txt2img",
        "img2img_tab": "Send the image and its generation parameters to img2img",
        "inpaint_tab": "Send the image and its generation parameters to img2img's Inpaint tab",
        "extras_tab": "Send the image to Extras",
        "extras_generate": "Upscale and restore faces",
        "upscaling_res_switch_btn": "Switch width/height",
        "extras_refresh_upscalers": "Rescan the upscaler model folders",
    }, window.titles || {});
    // Buttons repeated per tab and ControlNet unit: hover text by the end of their elem_id.
    const suffixTitles = {
        "_controlnet_trigger_preprocessor": "Run preprocessor",
        "_controlnet_refresh_models": "Refresh models",
    };

    function applyTitles() {
        for (const [id, title] of Object.entries(window.titles || {})) {
            const element = document.getElementById(id);
            if (element && !element.title) {
                element.title = title;
            }
        }
        for (const [suffix, title] of Object.entries(suffixTitles)) {
            document.querySelectorAll(`[id$="${suffix}"]:not([title])`).forEach(function (element) {
                element.title = title;
            });
        }
    }

    new MutationObserver(applyTitles).observe(document.documentElement, {childList: true, subtree: true});
})();

// ---- number boxes with a range (sliders' boxes): typed values outside it --------------------------------------
// Gradio sends every keystroke's number to the server, where one outside the range is an HTTP error (typing
// "512" sends 5 first), and then moves the box back into the range without a word. Here a value outside the
// range stays in the box until it is committed (Enter or leaving the box); then it is brought into the range
// and a note under the box says so.
(function () {
    "use strict";

    function limits(input) {
        const min = input.min === "" ? -Infinity : Number(input.min);
        const max = input.max === "" ? Infinity : Number(input.max);
        return {min: min, max: max};
    }

    function ranged(target) {
        return target instanceof HTMLInputElement && target.type === "number" && (target.min !== "" || target.max !== "");
    }

    function outside(input) {
        const {min, max} = limits(input);
        const value = input.valueAsNumber;
        return input.value === "" || Number.isNaN(value) || value < min || value > max;
    }

    function labelOf(input) {
        const block = input.closest(".block");
        const label = block && block.querySelector("[data-testid=block-info]");
        return label ? label.textContent.trim() : (input.getAttribute("aria-label") || "Value");
    }

    function note(input, text) {
        const block = input.closest(".block") || input.parentElement;
        let shown = block.querySelector(":scope > .range-note");
        if (!shown) {
            shown = document.createElement("div");
            shown.className = "range-note";
            shown.setAttribute("role", "status");
            block.appendChild(shown);
        }
        shown.textContent = text;
        clearTimeout(shown.timer);
        shown.timer = setTimeout(function () { shown.remove(); }, 8000);
    }

    document.addEventListener("input", function (event) {
        if (!event.isTrusted || !ranged(event.target)) {
            return;
        }
        if (outside(event.target)) {
            event.stopImmediatePropagation();   // not yet: "5" on the way to "512"
        }
    }, true);

    function commit(event) {
        const input = event.target;
        if (!ranged(input) || !outside(input)) {
            return;
        }
        const {min, max} = limits(input);
        const range = input.closest(".block") && input.closest(".block").querySelector("input[type=range]");
        const typed = input.value;
        let value;
        let text;
        if (typed === "" || Number.isNaN(input.valueAsNumber)) {
            value = range ? Number(range.value) : (Number.isFinite(min) ? min : max);
            text = `${labelOf(input)}: not a number; kept ${value}`;
        } else {
            value = Math.min(Math.max(input.valueAsNumber, min), max);
            text = `${labelOf(input)}: ${typed} is ${input.valueAsNumber < min ? "below the minimum" : "above the maximum"}` +
                `, ${value}; set to ${value}`;
        }
        input.value = String(value);
        input.dispatchEvent(new Event("input", {bubbles: true}));
        note(input, text);
    }

    document.addEventListener("change", commit, true);
    document.addEventListener("blur", commit, true);
    document.addEventListener("keydown", function (event) {
        if (event.key === "Enter") {
            commit(event);
        }
    }, true);
})();
// ---- end number boxes ---------------------------------------------------------------------------------------

// ---- img2img tab, Hires. fix and Refiner (modules/ui/img2img.py, accordions.py) -------------------------
(function () {
    "use strict";

    // Which of `panels` ({key: elem_id of a gr.Tab}) is shown; A1111 reads the mode of img2img the same way.
    window.img2imgSelectedTab = function (panels, fallback) {
        for (const [key, id] of Object.entries(panels)) {
            const panel = document.getElementById(id);
            if (panel && panel.offsetParent !== null) {
                return key;
            }
        }
        return fallback;
    };

    // The inpaint controls are shown on the inpaint sub-tabs only (style.css keys on this attribute).
    window.img2imgShowModeControls = function () {
        const modes = {
            img2img: "img2img_img2img_tab", sketch: "img2img_img2img_sketch_tab", inpaint: "img2img_inpaint_tab",
            inpaint_sketch: "img2img_inpaint_sketch_tab", inpaint_upload: "img2img_inpaint_upload_tab",
            batch: "img2img_batch_tab",
        };
        // The newly selected panel is laid out on the next frame.
        requestAnimationFrame(function () {
            document.body.dataset.img2imgMode = window.img2imgSelectedTab(modes, "img2img");
        });
    };

    // A1111's InputAccordion: a checkbox in the accordion header that enables it (Hires. fix, Refiner). The
    // value lives in a hidden gr.Checkbox (class "for-<accordion id>"); opening the accordion ticks it until
    // the header checkbox is used directly.
    function parts(accordion) {
        return {
            labelWrap: accordion.querySelector(".label-wrap"),
            hidden: document.querySelector(".for-" + accordion.id + " input[type=checkbox]"),
        };
    }

    function setHidden(accordion, checked) {
        const hidden = parts(accordion).hidden;
        if (hidden && hidden.checked !== checked) {
            hidden.click();
        }
    }

    function setupInputAccordion(accordion) {
        const {labelWrap, hidden} = parts(accordion);
        if (accordion.visibleCheckbox || !labelWrap || !hidden) {
            return;
        }
        const box = document.createElement("input");
        box.type = "checkbox";
        box.id = accordion.id + "-visible-checkbox";
        box.className = "input-accordion-checkbox";
        box.checked = hidden.checked;
        labelWrap.insertBefore(box, labelWrap.firstChild);
        accordion.visibleCheckbox = box;
        accordion.linked = true;
        box.addEventListener("click", function (event) {
            event.stopPropagation();   // ticking the box does not fold the accordion
            accordion.linked = false;
            setHidden(accordion, box.checked);
        });
        new MutationObserver(function () {
            const open = labelWrap.classList.contains("open");
            if (accordion.linked && open !== box.checked) {
                box.checked = open;
                setHidden(accordion, open);
            }
        }).observe(labelWrap, {attributes: true, attributeFilter: ["class"]});
    }

    // Called when the hidden checkbox changes (a click, or ↙️ paste): the header shows it, and it opens.
    window.inputAccordionChecked = function (id, checked) {
        const accordion = document.getElementById(id);
        if (!accordion) {
            return;
        }
        setupInputAccordion(accordion);
        if (accordion.visibleCheckbox) {
            accordion.visibleCheckbox.checked = checked;
        }
        const labelWrap = accordion.querySelector(".label-wrap");
        if (checked && labelWrap && !labelWrap.classList.contains("open")) {
            labelWrap.click();
        }
    };

    new MutationObserver(function () {
        document.querySelectorAll(".input-accordion").forEach(setupInputAccordion);
    }).observe(document.documentElement, {childList: true, subtree: true});
})();
// ---- end img2img / Hires. fix / Refiner -------------------------------------------------------------------
