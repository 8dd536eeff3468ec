//! The lease renewal script (`src/lua/renew.lua`) against a real
//! redis-server: a worker renews the entries it still owns, and never
//! claims back one another worker took after its lease lapsed.

#[macro_use]
mod server;

#[test]
fn renewal_resets_own_entries_and_never_takes_back_a_taken_one() {
    let redis = require_redis!();
    let mut con = redis.connect();
    let renew = redis::Script::new(include_str!("../src/lua/renew.lua"));
    redis::cmd("XGROUP")
        .arg(&["CREATE", "s", "w", "0", "MKSTREAM"][..])
        .exec(&mut con)
        .unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            redis::cmd("XADD")
                .arg(&["s", "*", "n"][..])
                .arg(i)
                .query(&mut con)
                .unwrap()
        })
        .collect();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", "w", "a", "COUNT", "3", "STREAMS", "s", ">"][..])
        .query(&mut con)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    // b takes the second entry (a's lease on it lapsed).
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&["s", "w", "b", "10", &ids[1], "JUSTID"][..])
        .query(&mut con)
        .unwrap();
    let renewed: i64 = renew
        .key("s")
        .arg("w")
        .arg("a")
        .arg(&ids)
        .invoke(&mut con)
        .unwrap();
    assert_eq!(renewed, 2);
    // Owners and idle times: a's two renewed (idle reset), b's kept.
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&["s", "w", "-", "+", "10"][..])
        .query(&mut con)
        .unwrap();
    let owner: Vec<&str> = pending.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(owner, ["a", "b", "a"]);
    assert!(pending[0].2 < 40 && pending[2].2 < 40, "{pending:?}");
    // Renewal does not count as a delivery.
    assert_eq!(pending[0].3, 1, "{pending:?}");
}
