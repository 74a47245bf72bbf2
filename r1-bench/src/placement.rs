//! CPU placement for the round-trip rows.
//!
//! Why: on this kind of machine (a 2-vCPU Firecracker VM whose guest does not
//! halt-poll, `haltpoll.guest_halt_poll_ns=0`) an idle vCPU halts at once, and
//! waking a thread there costs a VM exit and re-entry: tens of µs. A round trip's
//! p50 then depends mostly on whether the scheduler happened to put the server's
//! thread on the client's vCPU, and it picks differently from run to run (the echo
//! floor alone measured 15 µs in one run and 53 µs in another). Pinning both the
//! daemon and its floor the same way makes a ratio compare like with like.

use std::mem::{size_of, zeroed};

/// The CPUs this process may run on (its affinity mask at the call).
pub fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    // SAFETY: `set` is a plain bit set that `sched_getaffinity` fills in.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

/// Restricts one thread (`tid`, 0 for the calling thread) to `cpus`.
fn pin_thread(tid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as above; `CPU_SET` only writes inside `set`, and indexes beyond
    // `CPU_SETSIZE` are never passed (they come from `allowed_cpus`).
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restricts the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> anyhow::Result<()> {
    Ok(pin_thread(0, cpus)?)
}

/// Restricts every thread of process `pid` to `cpus` (threads it starts later
/// inherit the mask of the thread that starts them).
pub fn pin_process(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    for t in tasks {
        let name = t?.file_name();
        let Some(tid) = name.to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        match pin_thread(tid, cpus) {
            Ok(()) => {}
            // A thread that ended since the listing.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(anyhow::anyhow!("cannot pin thread {tid} of {pid}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_a_thread_changes_its_mask_and_back() {
        let all = allowed_cpus().unwrap();
        assert!(!all.is_empty());
        let first = all[0];
        std::thread::spawn(move || {
            pin_current_thread(&[first]).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![first]);
            pin_current_thread(&all).unwrap();
            assert_eq!(allowed_cpus().unwrap(), all);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pinning_a_process_pins_every_thread_it_has() {
        let all = allowed_cpus().unwrap();
        let last = *all.last().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        pin_process(child.id(), &[last]).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(allowed, last.to_string());
        assert!(pin_process(u32::MAX, &[last]).is_err(), "no such process");
    }
}
