"""The chat page at ``/`` in a real headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium): a typed message streams back the reply the API gives for the same
conversation (greedy, and seeded sampling), and the conversation is kept for the next turn."""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if binary is None or not os.path.exists(driver):
        pytest.fail(f"the chat page test needs Chromium and its driver: {INSTALL}", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _api_reply(server, messages, **sampling):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    return client.chat.completions.create(model="tiny-chat", messages=messages,
                                          **sampling).choices[0].message.content


@pytest.mark.parametrize("sampling", [{"temperature": 0, "max_tokens": 8},
                                      {"temperature": 1.0, "seed": 7, "max_tokens": 8}])
def test_the_page_streams_the_apis_reply_and_keeps_the_conversation(server, sampling):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(server.url + "/")
        assert "tiny-chat" in browser.title
        for field, value in sampling.items():
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(str(value))
        history = []
        for text in ("What is 3 plus 3?", "Thanks"):
            box = browser.find_element(By.ID, "message")
            box.send_keys(text)
            browser.find_element(By.ID, "send").click()
            WebDriverWait(browser, 60).until(lambda b: b.find_elements(
                By.CSS_SELECTOR, ".assistant")[-1].get_attribute("data-done") == "true")
            history.append({"role": "user", "content": text})
            expected = _api_reply(server, history, **sampling)  # the whole conversation so far
            reply = browser.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
            assert browser.execute_script("return arguments[0].textContent", reply) == expected
            assert expected and (expected.strip() or sampling["temperature"] == 0)
            history.append({"role": "assistant", "content": expected})
            assert "tokens/s" in browser.find_element(By.ID, "stats").text
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".user")] == [
            "What is 3 plus 3?", "Thanks"]
    finally:
        browser.quit()
