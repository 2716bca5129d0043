//! Every event of any exchange in every output format (native, OCSF, ECS, CEF): one line each,
//! ending in `\n` with no other line break; native, OCSF and ECS parse as JSON objects; CEF
//! starts `CEF:0|`, has its seven header fields and a valid severity, and its extension gives
//! back the event's method, path, request id and User-Agent unchanged after unescaping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scimtap::event::events_for;
use scimtap_fuzz::{check_encodings, contexts, parse_case};

fuzz_target!(|data: &[u8]| {
    let case = parse_case(data);
    let mut ctx = contexts()[case.context].clone();
    for ex in &case.exchanges {
        ctx.learn(ex);
        for event in &events_for(ex, &ctx) {
            check_encodings(event);
        }
    }
});
