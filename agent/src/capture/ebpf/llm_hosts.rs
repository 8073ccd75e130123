//! The LLM API hosts whose TLS handshakes make `--all` hook a process: the
//! major providers' API hosts, and those given with `--llm-host`. The kernel
//! reads the server name (SNI) of each ClientHello a process sends and holds
//! the process only for one of these; hooks on every process that speaks TLS
//! would tax every TLS call on the node.

use std::fmt;
use std::str::FromStr;

/// `LLMTAP_HOST_LEN`: names this long or longer are not kept.
pub const HOST_LEN: usize = 64;

/// The API hosts of the providers llmtap decodes, and of the common
/// OpenAI-compatible services.
pub const KNOWN_LLM_HOSTS: &[&str] = &[
    "api.openai.com",
    "*.openai.azure.com",
    "*.services.ai.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "api.mistral.ai",
    "api.cohere.com",
    "api.cohere.ai",
    "api.groq.com",
    "api.together.xyz",
    "api.fireworks.ai",
    "api.deepseek.com",
    "api.x.ai",
    "api.perplexity.ai",
    "openrouter.ai",
];

/// A server name, or with `*.`, every name one label below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlmHost {
    name: String,
    subdomains: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("--llm-host {0:?}: give a server name as TLS clients send it (api.example.com), or *.example.com for the names one label below it; lowercase letters, digits, '-' and '.', under {HOST_LEN} bytes")]
pub struct BadLlmHost(String);

impl FromStr for LlmHost {
    type Err = BadLlmHost;

    fn from_str(value: &str) -> Result<Self, BadLlmHost> {
        let lower = value.to_ascii_lowercase();
        let (name, subdomains) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        let valid = !name.is_empty()
            && name.len() < HOST_LEN
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(BadLlmHost(value.to_owned()));
        }
        Ok(LlmHost {
            name: name.to_owned(),
            subdomains,
        })
    }
}

impl fmt::Display for LlmHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subdomains {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// The known hosts and the `extra` ones.
pub fn with_known(extra: Vec<LlmHost>) -> Vec<LlmHost> {
    KNOWN_LLM_HOSTS
        .iter()
        .map(|h| h.parse().expect("known hosts are valid"))
        .chain(extra)
        .collect()
}

/// The `llm_hosts` map's entries: each name, zero-padded, with its
/// `LLMTAP_HOST_*` bits (a name given both plain and with `*.` has both).
pub fn kernel_entries(hosts: &[LlmHost]) -> Vec<([u8; HOST_LEN], u8)> {
    let mut entries: Vec<([u8; HOST_LEN], u8)> = Vec::new();
    for host in hosts {
        let mut key = [0u8; HOST_LEN];
        key[..host.name.len()].copy_from_slice(host.name.as_bytes());
        let bit = if host.subdomains {
            super::abi::HOST_SUBDOMAINS
        } else {
            super::abi::HOST_EXACT
        };
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, bits)) => *bits |= bit,
            None => entries.push((key, bit)),
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wildcards_parse_lowercased() {
        let host: LlmHost = "API.Example.com".parse().unwrap();
        assert_eq!(host.to_string(), "api.example.com");
        let wild: LlmHost = "*.openai.azure.com".parse().unwrap();
        assert_eq!(wild.to_string(), "*.openai.azure.com");
        for bad in [
            "",
            "*.",
            "a..b",
            ".a",
            "a.",
            "a b",
            "*.*.a",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<LlmHost>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_name_given_plain_and_with_a_wildcard_is_one_entry_with_both_bits() {
        let hosts: Vec<LlmHost> = ["llm.internal", "*.llm.internal", "other"]
            .iter()
            .map(|h| h.parse().unwrap())
            .collect();
        let entries = kernel_entries(&hosts);
        assert_eq!(entries.len(), 2);
        assert_eq!(&entries[0].0[..13], b"llm.internal\0");
        assert_eq!(
            entries[0].1,
            super::super::abi::HOST_EXACT | super::super::abi::HOST_SUBDOMAINS
        );
        assert_eq!(entries[1].1, super::super::abi::HOST_EXACT);
    }

    #[test]
    fn every_known_host_fits_the_kernel_key() {
        assert_eq!(with_known(Vec::new()).len(), KNOWN_LLM_HOSTS.len());
    }
}
