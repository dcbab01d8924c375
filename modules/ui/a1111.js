// A1111's page JavaScript API (its script.js, ui.js, progressbar.js, hints.js, localStorage.js, localization.js
// globals) for extensions' scripts, acting on this page. Loaded after script.js (which has gradioApp, onUiLoaded,
// onUiUpdate, onAfterUiUpdate, onUiTabChange, get_uiCurrentTab) and before the extensions' scripts
// (modules/ui/__init__.py head_html). Functions are globals, as in A1111, so extensions can call them bare.

// ---- callbacks and settings ---------------------------------------------------------------------------------
// window.opts: every setting's value, filled from the hidden settings_json textbox (modules/ui/page_options.py) on
// page load and after settings are saved; onOptionsAvailable runs once they are, onOptionsChanged each time.
var opts = {};
var optionsChangedCallbacks = [];
var optionsAvailableCallbacks = [];

function executeCallbacks(queue, arg) {
    for (const callback of queue) {
        try {
            callback(arg);
        } catch (e) {
            console.error("error running callback", callback, ":", e);
        }
    }
}

function onOptionsChanged(callback) {
    optionsChangedCallbacks.push(callback);
}

function onOptionsAvailable(callback) {
    if (Object.keys(opts).length != 0) {
        callback();
        return;
    }
    optionsAvailableCallbacks.push(callback);
}

window.webuiReceiveOptions = function (text) {
    let received;
    try {
        received = JSON.parse(text);
    } catch (e) {
        console.error("settings_json is not JSON:", e);
        return;
    }
    const first = Object.keys(opts).length == 0;
    opts = received;
    if (first) {
        executeCallbacks(optionsAvailableCallbacks);
        optionsAvailableCallbacks = [];
    }
    executeCallbacks(optionsChangedCallbacks);
};

// ---- elements ----------------------------------------------------------------------------------------------
function uiElementIsVisible(el) {
    if (el === document) {
        return true;
    }
    if (!(el instanceof Element)) {   // the page's shadow root or a detached node
        return el && el.host ? uiElementIsVisible(el.host) : !!el;
    }
    if (getComputedStyle(el).display === 'none') {
        return false;
    }
    return uiElementIsVisible(el.parentNode);
}

function uiElementInSight(el) {
    const rect = el.getBoundingClientRect();
    return rect.bottom > 0 && rect.top < window.innerHeight;
}

// A value set by script reaches Gradio (and the server) only through an input event.
function updateInput(target) {
    let e = new Event("input", {bubbles: true});
    Object.defineProperty(e, "target", {value: target});
    target.dispatchEvent(e);
}

function randomId() {
    return "task(" + Math.random().toString(36).slice(2, 7) + Math.random().toString(36).slice(2, 7) +
        Math.random().toString(36).slice(2, 7) + ")";
}

// ---- tabs -------------------------------------------------------------------------------------------------------
// The buttons of a gr.Tabs (its own, not those of tabs inside it).
function webuiTabButtons(tabsId) {
    const tabs = gradioApp().getElementById(tabsId);
    if (!tabs) {
        return [];
    }
    const list = Array.from(tabs.querySelectorAll("[role=tablist]")).find(function (candidate) {
        return candidate.closest(".tabs") === tabs || candidate.closest("[id]") === tabs;
    });
    return list ? Array.from(list.querySelectorAll("button[role=tab]")) : [];
}

function get_tab_index(tabId) {
    const index = webuiTabButtons(tabId).findIndex(function (button) {
        return button.classList.contains("selected") || button.getAttribute("aria-selected") === "true";
    });
    return index < 0 ? 0 : index;
}

function create_tab_index_args(tabId, args) {
    var res = Array.from(args);
    res[0] = get_tab_index(tabId);
    return res;
}

function get_img2img_tab_index() {
    let res = Array.from(arguments);
    res.splice(-2);
    res[0] = get_tab_index('mode_img2img');
    return res;
}

// Picks the tab whose panel has the id `panelId` (Gradio gives its button the id `<panelId>-button`).
function webuiSelectTab(tabsId, panelId) {
    const button = document.getElementById(panelId + "-button") || webuiTabButtons(tabsId).find(function (candidate) {
        return candidate.getAttribute("aria-controls") === panelId;
    });
    if (button) {
        button.click();
    }
    return !!button;
}

function switch_to_txt2img() {
    webuiSelectTab("tabs", "tab_txt2img");
    return Array.from(arguments);
}

// no: 0 img2img, 1 sketch, 2 inpaint, 3 inpaint sketch, 4 inpaint upload, 5 batch (A1111's order).
function switch_to_img2img_tab(no) {
    const modes = ["img2img_img2img_tab", "img2img_img2img_sketch_tab", "img2img_inpaint_tab",
                   "img2img_inpaint_sketch_tab", "img2img_inpaint_upload_tab", "img2img_batch_tab"];
    webuiSelectTab("tabs", "tab_img2img");
    // the img2img tab's contents exist once it has been shown
    setTimeout(function () { webuiSelectTab("mode_img2img", modes[no] || modes[0]); });
}

function switch_to_img2img() {
    switch_to_img2img_tab(0);
    return Array.from(arguments);
}

function switch_to_sketch() {
    switch_to_img2img_tab(1);
    return Array.from(arguments);
}

function switch_to_inpaint() {
    switch_to_img2img_tab(2);
    return Array.from(arguments);
}

function switch_to_inpaint_sketch() {
    switch_to_img2img_tab(3);
    return Array.from(arguments);
}

function switch_to_extras() {
    webuiSelectTab("tabs", "tab_extras");
    return Array.from(arguments);
}

// ---- galleries --------------------------------------------------------------------------------------------------
// The thumbnails of the galleries (id ending in _gallery) in the tab on screen.
function all_gallery_buttons() {
    const content = get_uiCurrentTabContent() || gradioApp();
    return Array.from(content.querySelectorAll("[id$=_gallery] .thumbnail-item")).filter(function (elem) {
        return elem.offsetParent !== null;
    });
}

function selected_gallery_button() {
    return all_gallery_buttons().find(elem => elem.classList.contains('selected')) ?? null;
}

function selected_gallery_index() {
    return all_gallery_buttons().findIndex(elem => elem.classList.contains('selected'));
}

function extract_image_from_gallery(gallery) {
    if (gallery.length == 0) {
        return [null];
    }
    if (gallery.length == 1) {
        return [gallery[0]];
    }
    var index = selected_gallery_index();
    if (index < 0 || index >= gallery.length) {
        index = 0;
    }
    return [gallery[index]];
}

window.args_to_array = Array.from;

// ---- A1111's argument helpers of its Generate buttons -------------------------------------------------------------
// An extension's button with js=submit gets a task id as its first argument (and img2img's mode as its second),
// as in A1111; the progress of the project's own Generate buttons is shown by the page, not by these.
function create_submit_args(args) {
    var res = Array.from(args);
    if (Array.isArray(res[res.length - 3])) {
        res[res.length - 3] = null;   // the previous gallery: not sent back
    }
    return res;
}

function submit() {
    var res = create_submit_args(arguments);
    res[0] = randomId();
    return res;
}

function submit_img2img() {
    var res = create_submit_args(arguments);
    res[0] = randomId();
    res[1] = get_tab_index('mode_img2img');
    return res;
}

function submit_extras() {
    var res = create_submit_args(arguments);
    res[0] = randomId();
    return res;
}

function ask_for_style_name(_, prompt_text, negative_prompt_text) {
    var name_ = prompt('Style name:');
    return [name_, prompt_text, negative_prompt_text];
}

function confirm_clear_prompt(prompt, negative_prompt) {
    if (confirm("Delete prompt?")) {
        prompt = "";
        negative_prompt = "";
    }
    return [prompt, negative_prompt];
}

function setRandomSeed(elem_id) {
    var input = gradioApp().querySelector("#" + elem_id + " input");
    if (!input) {
        return [];
    }
    input.value = "-1";
    updateInput(input);
    return [];
}

function switchWidthHeight(tabname) {
    var width = gradioApp().querySelector("#" + tabname + "_width input[type=number]");
    var height = gradioApp().querySelector("#" + tabname + "_height input[type=number]");
    if (!width || !height) {
        return [];
    }
    var tmp = width.value;
    width.value = height.value;
    height.value = tmp;
    updateInput(width);
    updateInput(height);
    return [];
}

var onEditTimers = {};

// Calls func afterMs milliseconds after the user last edited elem.
function onEdit(editId, elem, afterMs, func) {
    var edited = function () {
        clearTimeout(onEditTimers[editId]);
        onEditTimers[editId] = setTimeout(func, afterMs);
    };
    elem.addEventListener("input", edited);
    return edited;
}

// ---- requests ---------------------------------------------------------------------------------------------------
// A1111's: `handler` gets the JSON answer of a 200, `errorHandler` anything else
function answerJson(xhr, handler, errorHandler) {
    xhr.onreadystatechange = function () {
        if (xhr.readyState !== 4) {
            return;
        }
        if (xhr.status === 200) {
            try {
                handler(JSON.parse(xhr.responseText));
            } catch (error) {
                console.error(error);
                errorHandler && errorHandler();
            }
        } else if (errorHandler) {
            errorHandler();
        }
    };
}

function request(url, data, handler, errorHandler) {
    var xhr = new XMLHttpRequest();
    xhr.open("POST", url, true);
    xhr.setRequestHeader("Content-Type", "application/json");
    answerJson(xhr, handler, errorHandler);
    xhr.send(JSON.stringify(data));
}

function requestGet(url, data, handler, errorHandler) {
    var xhr = new XMLHttpRequest();
    var args = Object.keys(data).map(function (k) {
        return encodeURIComponent(k) + '=' + encodeURIComponent(data[k]);
    }).join('&');
    xhr.open("GET", url + "?" + args, true);
    answerJson(xhr, handler, errorHandler);
    xhr.send(JSON.stringify(data));
}

// Reloads the page once the server answers again (after a restart).
function restart_reload() {
    document.body.style.backgroundColor = "var(--background-fill-primary)";
    document.body.innerHTML = '<h1 style="font-family:monospace;margin-top:20%;color:lightgray;text-align:center;">Reloading...</h1>';
    var ping = function () {
        fetch("./", {cache: "no-store"}).then(function (response) {
            if (response.ok) {
                location.reload();
            } else {
                setTimeout(ping, 500);
            }
        }, function () { setTimeout(ping, 500); });
    };
    setTimeout(ping, 2000);
    return [];
}

// ---- local storage ----------------------------------------------------------------------------------------------
function localSet(k, v) {
    try {
        localStorage.setItem(k, v);
    } catch (e) {
        console.warn(`Failed to save ${k} to localStorage: ${e}`);
    }
}

function localGet(k, def) {
    try {
        return localStorage.getItem(k);
    } catch (e) {
        console.warn(`Failed to load ${k} from localStorage: ${e}`);
    }
    return def;
}

function localRemove(k) {
    try {
        return localStorage.removeItem(k);
    } catch (e) {
        console.warn(`Failed to remove ${k} from localStorage: ${e}`);
    }
}

// ---- hover texts and translations ---------------------------------------------------------------------------------
// `titles` (script.js: by element id; here, as A1111's hints.js: by an element's text, value, data-value or class)
// is the dictionary extensions add to. This web UI ships no localizations: `localization` stays empty unless an
// extension fills it, and getTranslation answers from it.
var localization = window.localization || {};

function getTranslation(text) {
    return text ? localization[text] : undefined;
}

function updateTooltip(element) {
    if (element.title) {
        return;
    }
    // Gradio 6 pads a button's text with white space (A1111's Gradio did not)
    const keys = [element.textContent.trim(), element.value, element.dataset && element.dataset.value,
                  ...(element.classList || [])];
    for (const key of keys) {
        const tooltip = key && window.titles[key];
        if (tooltip) {
            element.title = localization[tooltip] || tooltip;
            return;
        }
    }
}

(function () {
    const pending = new Set();
    let timer = null;
    onUiUpdate(function (records) {
        for (const record of records) {
            for (const node of record.addedNodes) {
                if (node.nodeType !== Node.ELEMENT_NODE || node.classList.contains("hide")) {
                    continue;
                }
                if (["SPAN", "BUTTON", "P", "INPUT"].includes(node.tagName) ||
                    (node.tagName === "LI" && node.classList.contains("item"))) {
                    pending.add(node);
                }
                node.querySelectorAll("span, button, p").forEach(n => pending.add(n));
            }
        }
        if (pending.size) {
            clearTimeout(timer);
            timer = setTimeout(function () {
                pending.forEach(updateTooltip);
                pending.clear();
            }, 1000);
        }
    });
})();
