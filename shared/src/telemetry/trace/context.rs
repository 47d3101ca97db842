//! The X-Ray trace header of an invocation, and the ids of its spans.
//!
//! Lambda hands each invocation its trace in the `Lambda-Runtime-Trace-Id`
//! header (`Root=1-67cef5e4-8ddab48fb765b86d4e572b04;Parent=53995c3f42cd8ad8;Sampled=1`),
//! which the runtime puts in `Context::xray_trace_id`: read from there, it is
//! right in concurrent mode too, where the runtime sets no
//! `_X_AMZN_TRACE_ID`. An X-Ray trace id is an OpenTelemetry trace id
//! written differently (the epoch seconds and the 96 random bits, without
//! the `1-` and the dashes), and `Parent` is the span id of the function's
//! segment: spans with that trace id and that parent show up in X-Ray under
//! the invocation.

/// What the header says about one invocation's trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The span this invocation's spans hang from; zero when the header
    /// named none (a root span).
    pub parent: [u8; 8],
    /// `Sampled=0` means: record nothing. A header without a decision
    /// (`Sampled=?` or none) is sampled.
    pub sampled: bool,
}

impl TraceContext {
    /// Parses an X-Ray trace header; `None` when it has no valid `Root`.
    pub fn parse(header: &str) -> Option<Self> {
        let mut trace_id = None;
        let mut parent = [0; 8];
        let mut sampled = true;
        for field in header.split(';') {
            match field.trim().split_once('=') {
                Some(("Root", root)) => trace_id = Some(root_to_trace_id(root)?),
                Some(("Parent", id)) => parent = hex::<8>(id)?,
                Some(("Sampled", decision)) => sampled = decision != "0",
                _ => {}
            }
        }
        Some(Self {
            trace_id: trace_id?,
            parent,
            sampled,
        })
    }

    /// A new trace for an invocation Lambda gave none (`cargo lambda`
    /// locally): a root, sampled.
    pub fn fresh() -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().into_bytes(),
            parent: [0; 8],
            sampled: true,
        }
    }
}

/// The `Root` value of an X-Ray trace header (`1-67cef5e4-8dda...`): what a
/// log record carries as `xray_trace_id`, and what the X-Ray console and
/// CloudWatch search by.
pub fn root_of(header: &str) -> Option<&str> {
    header
        .split(';')
        .find_map(|field| field.trim().strip_prefix("Root="))
        .filter(|root| !root.is_empty())
}

/// `1-<8 hex>-<24 hex>` into the 16 bytes of a trace id.
fn root_to_trace_id(root: &str) -> Option<[u8; 16]> {
    let mut parts = root.split('-');
    let (Some("1"), Some(time), Some(random), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let time = hex::<4>(time)?;
    let random = hex::<12>(random)?;
    let mut id = [0; 16];
    id[..4].copy_from_slice(&time);
    id[4..].copy_from_slice(&random);
    (id != [0; 16]).then_some(id)
}

/// Exactly `2 * N` hex digits.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(bytes)
}

/// A new span id: random, as the W3C and X-Ray rules ask, from a version 4
/// UUID's random bits (its fixed version bits make it never zero). Only a
/// traced invocation draws them, a few per invocation.
pub fn span_id() -> [u8; 8] {
    uuid::Uuid::new_v4().as_u64_pair().0.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Root=1-67cef5e4-8ddab48fb765b86d4e572b04;Parent=53995c3f42cd8ad8;Sampled=1";

    #[test]
    fn an_xray_header_gives_the_trace_id_parent_and_decision() {
        // Act
        let context = TraceContext::parse(HEADER).unwrap();

        // Assert
        assert_eq!(
            context.trace_id,
            [
                0x67, 0xce, 0xf5, 0xe4, 0x8d, 0xda, 0xb4, 0x8f, 0xb7, 0x65, 0xb8, 0x6d, 0x4e, 0x57,
                0x2b, 0x04
            ]
        );
        assert_eq!(
            context.parent,
            [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8]
        );
        assert!(context.sampled);
        assert_eq!(root_of(HEADER), Some("1-67cef5e4-8ddab48fb765b86d4e572b04"));
    }

    #[test]
    fn sampled_zero_is_not_sampled_and_a_missing_decision_is() {
        // Act
        let off = TraceContext::parse(&HEADER.replace("Sampled=1", "Sampled=0")).unwrap();
        let undecided = TraceContext::parse(&HEADER.replace(";Sampled=1", "")).unwrap();
        let lineage = TraceContext::parse(&format!("{HEADER};Lineage=a87bd80c:0")).unwrap();

        // Assert
        assert!(!off.sampled);
        assert!(undecided.sampled);
        assert_eq!(lineage.trace_id, undecided.trace_id);
    }

    #[test]
    fn malformed_headers_give_no_context() {
        for header in [
            "",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=2-67cef5e4-8ddab48fb765b86d4e572b04",
            "Root=1-67cef5e4-8ddab48fb765b86d4e572b0",
            "Root=1-67cef5e4-8ddab48fb765b86d4e572b0g",
            "Root=1-00000000-000000000000000000000000",
            "Root=1-67cef5e4-8ddab48fb765b86d4e572b04;Parent=53995c3f42cd8ad",
            "Root=1-67cef5e4-8ddab48fb765b86d4e572b04-00",
            "Root=1-67cef5é4-8ddab48fb765b86d4e572b0",
        ] {
            assert_eq!(TraceContext::parse(header), None, "{header}");
        }
        assert_eq!(root_of("Parent=53995c3f42cd8ad8"), None);
        assert_eq!(root_of("Root=;Sampled=1"), None);
    }

    #[test]
    fn span_ids_are_distinct_and_never_zero() {
        // Act
        let ids: std::collections::HashSet<[u8; 8]> = (0..10_000).map(|_| span_id()).collect();

        // Assert
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&[0; 8]));
        assert_ne!(
            TraceContext::fresh().trace_id,
            TraceContext::fresh().trace_id
        );
    }
}
