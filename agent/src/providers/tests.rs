//! Claims, request shapes and frame decoding.

use super::*;

fn head(method: &str, target: &str) -> RequestHead {
    RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        headers: Vec::new(),
    }
}

fn claimed(method: &str, target: &str) -> Option<(&'static str, Api)> {
    claim(&head(method, target)).map(|(p, api)| (p.name(), api))
}

#[test]
fn claims_by_path_in_priority_order() {
    let cases = [
        ("/v1/chat/completions", Some(("openai", Api::Chat))),
        ("/chat/completions", Some(("openai", Api::Chat))),
        ("/v1/completions", Some(("openai", Api::TextCompletion))),
        ("/v1/responses", Some(("openai", Api::Responses))),
        (
            "/openai/deployments/d/chat/completions?api-version=1",
            Some(("azure_openai", Api::Chat)),
        ),
        ("/v1/messages", Some(("anthropic", Api::Chat))),
        ("/api/chat", Some(("ollama", Api::Chat))),
        ("/api/generate", Some(("ollama", Api::TextCompletion))),
        (
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            Some(("gemini", Api::GenerateContent)),
        ),
        ("/v1/messages/count_tokens", None),
        ("/v1/embeddings", None),
        ("/api/v2/orders", None),
    ];
    for (target, want) in cases {
        assert_eq!(claimed("POST", target), want, "{target}");
    }
    assert_eq!(claimed("GET", "/v1/chat/completions"), None);
    let mut gateway = head("POST", "/llm/anthropic/messages");
    assert_eq!(claim(&gateway).map(|(p, _)| p.name()), None);
    gateway.headers.push(crate::http::Header {
        name: "anthropic-version".into(),
        value: "2023-06-01".into(),
    });
    assert_eq!(claim(&gateway).map(|(p, _)| p.name()), Some("anthropic"));
}

#[test]
fn unknown_body_shapes_are_not_llm_calls() {
    let (provider, api) = claim(&head("POST", "/v1/chat/completions")).unwrap();
    let h = head("POST", "/v1/chat/completions");
    let not_chat = serde_json::json!({"model": "x", "query": "select"});
    assert_eq!(provider.request(api, &h, Some(&not_chat)), None);
    let chat = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}}]}],
        "max_completion_tokens": 9});
    let info = provider.request(api, &h, Some(&chat)).unwrap();
    assert_eq!(info.model.as_deref(), Some("m"));
    assert_eq!(info.max_tokens, Some(9));
    assert_eq!(info.input_text, "a");
    // A body cut by the cap still makes a call, with what the path says.
    assert_eq!(
        provider.request(api, &h, None),
        Some(RequestInfo::default())
    );
}

#[test]
fn role_only_and_done_frames_carry_no_output() {
    let (provider, api) = claim(&head("POST", "/v1/chat/completions")).unwrap();
    let mut out = ResponseInfo::new(1024);
    let mut decoder = provider.decoder(api);
    let frame = |data: &'static [u8]| Frame { event: b"", data };
    let role = br#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
    assert!(!decoder.frame(frame(role), &mut out).unwrap());
    let text = br#"{"id":"c2","choices":[{"index":0,"delta":{"content":"Hi \"x\""}}]}"#;
    assert!(decoder.frame(frame(text), &mut out).unwrap());
    assert!(!decoder.frame(frame(b"[DONE]"), &mut out).unwrap());
    assert!(decoder.frame(frame(b"{not json"), &mut out).is_err());
    assert_eq!(out.id.as_deref(), Some("c1"));
    assert_eq!(out.text, "Hi \"x\"");
    assert!(out.done);
}

#[test]
fn text_cap_cuts_on_a_char_boundary() {
    let mut out = ResponseInfo::new(4);
    assert!(out.push_text("ab"));
    assert!(out.push_text("\u{e9}\u{e9}"));
    assert_eq!(out.text, "ab\u{e9}");
    assert!(out.text_truncated);
}

#[test]
fn string_and_object_errors() {
    let mut out = ResponseInfo::new(0);
    let (ollama, api) = claim(&head("POST", "/api/chat")).unwrap();
    ollama
        .decoder(api)
        .body(br#"{"error":"model 'x' not found"}"#, &mut out)
        .unwrap();
    let error = out.error.clone().unwrap();
    assert_eq!(error.kind, None);
    assert_eq!(error.message.as_deref(), Some("model 'x' not found"));
    let (openai, api) = claim(&head("POST", "/v1/responses")).unwrap();
    let event =
        br#"{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null}"#;
    openai
        .decoder(api)
        .frame(
            Frame {
                event: b"error",
                data: event,
            },
            &mut out,
        )
        .unwrap();
    assert_eq!(
        out.error.unwrap().kind.as_deref(),
        Some("rate_limit_exceeded")
    );
}
