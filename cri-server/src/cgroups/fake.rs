//! A [`CgroupDriver`] for unit tests: cgroupfs names under `/fake`, no host
//! access, a record of what was removed, and a failure to inject.

use std::sync::Mutex;

use super::naming::{cgroupfs, PodCgroup};
use super::{CgroupDriver, CgroupError};

/// A step of [`FakeCgroups`] that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeStep {
    PodCgroup,
    Remove,
}

#[derive(Debug, Default)]
pub struct FakeCgroups {
    fail: Mutex<Option<FakeStep>>,
    removed: Mutex<Vec<String>>,
}

impl FakeCgroups {
    /// Makes every later call of `step` fail (`None`: none fails).
    pub fn fail_at(&self, step: Option<FakeStep>) {
        *self.fail.lock().unwrap() = step;
    }

    /// The pod cgroups removed so far, in order.
    pub fn removed(&self) -> Vec<String> {
        self.removed.lock().unwrap().clone()
    }

    fn check(&self, step: FakeStep) -> Result<(), CgroupError> {
        if *self.fail.lock().unwrap() == Some(step) {
            return Err(CgroupError::Injected(format!("{step:?}")));
        }
        Ok(())
    }
}

impl CgroupDriver for FakeCgroups {
    fn pod_cgroup(&self, pod_id: &str, kubelet_parent: &str) -> Result<PodCgroup, CgroupError> {
        self.check(FakeStep::PodCgroup)?;
        cgroupfs::pod_cgroup("fake", pod_id, kubelet_parent)
    }

    fn container_cgroups_path(&self, pod_cgroup: &str, container_id: &str) -> String {
        cgroupfs::container_cgroup(pod_cgroup, container_id)
    }

    fn pod_dir(&self, pod_cgroup: &str) -> Result<String, CgroupError> {
        Ok(pod_cgroup.to_string())
    }

    fn container_dir(&self, pod_cgroup: &str, container_id: &str) -> Result<String, CgroupError> {
        Ok(cgroupfs::container_cgroup(pod_cgroup, container_id))
    }

    fn remove(&self, pod_cgroup: &str) -> Result<(), CgroupError> {
        self.check(FakeStep::Remove)?;
        self.removed.lock().unwrap().push(pod_cgroup.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_names_records_and_fails_on_demand() {
        let fake = FakeCgroups::default();
        let pod = fake.pod_cgroup("p1", "").unwrap();
        assert_eq!(pod.name, "/fake/p1");
        assert_eq!(fake.container_cgroups_path(&pod.name, "c1"), "/fake/p1/c1");
        fake.remove(&pod.name).unwrap();
        assert_eq!(fake.removed(), vec!["/fake/p1".to_string()]);
        fake.fail_at(Some(FakeStep::Remove));
        assert!(matches!(
            fake.remove("/fake/p2"),
            Err(CgroupError::Injected(_))
        ));
        fake.fail_at(Some(FakeStep::PodCgroup));
        assert!(fake.pod_cgroup("p2", "").is_err());
        fake.fail_at(None);
        assert_eq!(fake.removed().len(), 1);
    }
}
