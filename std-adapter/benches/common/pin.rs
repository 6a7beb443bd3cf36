//! Thread placement for the benches that compare two sides on this
//! 2-vCPU machine (see `README.md`: a wake-up across vCPUs costs more than
//! either side's work).

/// Pins the calling thread to `cpu` with `taskset -p` on its thread id (the
/// crate forbids `unsafe`, so no `sched_setaffinity` here). Best effort.
pub fn pin_current_thread(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let ok = tid.is_some_and(|tid| {
        std::process::Command::new("taskset")
            .args(["-p", "-c", &cpu.to_string(), &tid])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!("warning: could not pin a thread to CPU {cpu} (taskset); placement is free");
    }
}
