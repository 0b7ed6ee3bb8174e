//! Fuzz target: the HTTP API's request decoding: the path key, query
//! parameters, If-Match headers and the JSON bodies of /v1/batch and
//! /v1/txn, with the checks that run before storage is touched.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flashkv::api::http::fuzzing::decode_request(data);
});
