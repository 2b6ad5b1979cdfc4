//! What a new record is stamped with: its id and CRI timestamps. A base
//! module: the concerns use it, and it uses nothing of crius.

/// A new pod or container id: 64 hex digits, as containerd's.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Now, in unix nanoseconds (CRI's timestamps); 0 if the clock is before 1970.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
