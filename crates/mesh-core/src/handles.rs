//! Handles that die with what they name: a bounded slot map whose keys carry a generation.
//!
//! The nginx glue never lets a raw session or request pointer wait for an answer: what waits is
//! a [`Handle`] into a per-worker `Handles`, and whoever owns the waiting thing removes it when
//! it ends. A handle whose slot was emptied (or emptied and used again) finds nothing, so a late
//! answer is dropped instead of reaching freed memory. The capacity is a hard cap: past it,
//! [`Handles::insert`] gives the value back and the caller refuses the work.

/// A slot index and the generation it was given out at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    index: u32,
    generation: u32,
}

impl Handle {
    /// The handle as one number (for a queue or a wire event).
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The handle a [`Handle::to_u64`] number stands for.
    pub fn from_u64(v: u64) -> Handle {
        Handle { index: v as u32, generation: (v >> 32) as u32 }
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A slot map of at most `cap` live values.
pub struct Handles<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
    cap: usize,
}

impl<T> Handles<T> {
    pub fn new(cap: usize) -> Handles<T> {
        Handles { slots: Vec::new(), free: Vec::new(), len: 0, cap }
    }

    /// Store `value`; `Err(value)` when `cap` values are live already.
    pub fn insert(&mut self, value: T) -> Result<Handle, T> {
        if self.len >= self.cap {
            return Err(value);
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let Ok(i) = u32::try_from(self.slots.len()) else { return Err(value) };
                self.slots.push(Slot { generation: 0, value: None });
                i
            }
        };
        let slot = &mut self.slots[index as usize];
        // A new generation for every use of the slot: older handles never match again.
        slot.generation = slot.generation.wrapping_add(1);
        slot.value = Some(value);
        self.len += 1;
        Ok(Handle { index, generation: slot.generation })
    }

    pub fn get(&self, h: Handle) -> Option<&T> {
        self.slots.get(h.index as usize).filter(|s| s.generation == h.generation)?.value.as_ref()
    }

    pub fn get_mut(&mut self, h: Handle) -> Option<&mut T> {
        self.slots.get_mut(h.index as usize).filter(|s| s.generation == h.generation)?.value.as_mut()
    }

    /// Take the value out; the handle (and every copy of it) is dead from here on.
    pub fn remove(&mut self, h: Handle) -> Option<T> {
        let slot = self.slots.get_mut(h.index as usize).filter(|s| s.generation == h.generation)?;
        let v = slot.value.take()?;
        self.free.push(h.index);
        self.len -= 1;
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Every live value with its handle.
    pub fn iter(&self) -> impl Iterator<Item = (Handle, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value.as_ref().map(|v| (Handle { index: i as u32, generation: s.generation }, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_handle_finds_nothing_even_when_its_slot_is_used_again() {
        let mut h = Handles::new(4);
        let a = h.insert("a").unwrap();
        assert_eq!(h.get(a), Some(&"a"));
        assert_eq!(h.remove(a), Some("a"));
        let b = h.insert("b").unwrap();
        // Same slot, new generation.
        assert_eq!(a.index, b.index);
        assert_ne!(a, b);
        assert_eq!(h.get(a), None);
        assert_eq!(h.remove(a), None);
        assert_eq!(h.get(b), Some(&"b"));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn the_capacity_is_a_hard_cap() {
        let mut h = Handles::new(2);
        let a = h.insert(1).unwrap();
        h.insert(2).unwrap();
        assert_eq!(h.insert(3), Err(3));
        h.remove(a);
        assert!(h.insert(3).is_ok());
        assert_eq!(h.len(), 2);
        assert_eq!(h.iter().map(|(_, v)| *v).collect::<Vec<_>>(), vec![3, 2]);
    }

    #[test]
    fn numbers_round_trip_and_forged_numbers_find_nothing() {
        let mut h = Handles::new(8);
        let a = h.insert('x').unwrap();
        assert_eq!(Handle::from_u64(a.to_u64()), a);
        assert_eq!(h.get(Handle::from_u64(a.to_u64() + (1 << 32))), None);
        assert_eq!(h.get(Handle::from_u64(u64::MAX)), None);
        assert_eq!(h.get(Handle::from_u64(7)), None);
    }

    #[test]
    fn generations_wrap_without_matching_old_handles_in_practice() {
        let mut h = Handles::new(1);
        let first = h.insert(0u8).unwrap();
        h.remove(first);
        for _ in 0..1000 {
            let x = h.insert(1).unwrap();
            h.remove(x);
        }
        assert_eq!(h.get(first), None);
        assert!(h.is_empty());
    }
}
