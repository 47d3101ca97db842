//! Fuzzes what every handler does before it calls the service: an API Gateway
//! event (v1 or v2 JSON, as the runtime receives it) becomes a `Request`, then
//! the path id, the JSON body and the list query are parsed from it. None of
//! it may panic, and every error must be a 4xx.
//!
//! `lambda_http` itself panics on a few events API Gateway never sends (a body
//! flagged base64 that is not, a raw query string or host that is no valid
//! URI); see the issues on aws/aws-lambda-rust-runtime (#461, #489). Those
//! panics happen before our code runs and are not ours to fix, so they are
//! printed once per location and the input is dropped; any other panic aborts
//! and is reported by libFuzzer as a crash.

#![no_main]

use lambda_http::Request;
use libfuzzer_sys::{Corpus, fuzz_target};
use std::cell::Cell;
use std::collections::HashSet;
use std::panic::{self, PanicHookInfo};
use std::sync::Mutex;
use users_api::config::Limits;
use users_api::http::{json_body, list_query, path_id};
use users_api::user::{NewUser, UserEmail, UserName, UserPayload};

thread_local! {
    static IN_LAMBDA_HTTP: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the aborting hook that libfuzzer-sys installs: a panic inside
/// [`event`] is noted and unwinds, any other still aborts.
fn spare_panics_in_lambda_http() {
    let abort = panic::take_hook();
    let seen = Mutex::new(HashSet::new());
    panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
        if !IN_LAMBDA_HTTP.get() {
            return abort(info);
        }
        let location = info.location().map(ToString::to_string);
        if seen
            .lock()
            .is_ok_and(|mut seen| seen.insert(location.clone()))
        {
            eprintln!(
                "lambda_http panicked at {} (not our code, input dropped): {}",
                location.unwrap_or_default(),
                payload(info)
            );
        }
    }));
}

fn payload<'a>(info: &'a PanicHookInfo<'_>) -> &'a str {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}

/// The request `lambda_http` makes of `text`; `Err(())` if it panicked.
fn event(text: &str) -> Result<Option<Request>, ()> {
    IN_LAMBDA_HTTP.set(true);
    let request = panic::catch_unwind(|| lambda_http::request::from_str(text));
    IN_LAMBDA_HTTP.set(false);
    request.map(Result::ok).map_err(drop)
}

fuzz_target!(init: spare_panics_in_lambda_http(), |data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    let request = match event(text) {
        Err(()) => return Corpus::Reject,
        Ok(None) => return Corpus::Keep,
        Ok(Some(request)) => request,
    };
    // A small body limit, so that inputs of libFuzzer's sizes reach both sides.
    let limits = Limits {
        max_body_bytes: 512,
        ..Limits::default()
    };

    let new_user = json_body::<UserPayload>(&request, &limits)
        .and_then(|payload| NewUser::parse(payload, &limits));
    if let Ok(user) = &new_user {
        let email = UserEmail::parse(user.email.as_str(), limits.email_max_chars);
        let name = UserName::parse(user.name.as_str(), limits.name_max_chars);
        assert_eq!(email.ok().as_ref(), Some(&user.email));
        assert_eq!(name.ok().as_ref(), Some(&user.name));
    }
    let errors = [
        path_id(&request).err(),
        new_user.err(),
        list_query(&request, &limits).err(),
    ];
    for error in errors.into_iter().flatten() {
        assert!(
            (400..=415).contains(&error.status()),
            "{} {}: {error}",
            error.status(),
            error.code()
        );
    }
    Corpus::Keep
});
