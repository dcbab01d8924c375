"""The robustness checklist (/work/shared/reference/robustness.md, sections A, B, D, E) driven as a client would.

Cases already held elsewhere are not repeated here; each test names its checklist number. The rest of the list:
A1–A3, A5, A6 and the other A7 files: test_model_loading.py; A8: test_lora_files.py; B11 registry level:
test_registry_and_manager.py; D24/D26 basics, D27 sampler/scheduler/model: test_api.py; D29: test_lora_apply.py;
E31–E33 decoding: test_images.py, test_image_inputs.py, test_api_img2img.py; E34 UI escaping:
test_ui_browser_pnginfo.py; E35 parser: test_infotext.py; E36: test_cards.py, test_ui_extra_networks.py;
B14, E37 (and all of C): test_security_http.py, test_security_url_images.py. Not applicable: A9 (no scanner is
used), B12 (no route takes an output file name), B16 (no backup or config-state name comes from a request).

The server they drive is built once for the package (conftest.py); the requests and checks they share are in
checks.py.
"""
