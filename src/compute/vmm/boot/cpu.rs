//! The 64-bit entry state of a vCPU: GDT, identity page tables, registers, FPU, CPUID,
//! MSRs and LAPIC LINT pins. Pure functions build the values (unit-tested); [`configure_vcpu`]
//! hands them to KVM.

use kvm_bindings::{
    kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::super::memory::{
    BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR, ZERO_PAGE_ADDR,
};
use super::BootError;

/// GDT: null, 64-bit code, data, TSS; the selectors are index * 8.
pub const GDT: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];
const CODE_SEL: u16 = 1 << 3;
const DATA_SEL: u16 = 2 << 3;
const TSS_SEL: u16 = 3 << 3;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Encodes a GDT descriptor from flags (access byte in the low 8 bits, granularity/size
/// nibble in bits 12..16), base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM segment register matching GDT entry `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

fn write(mem: &GuestMemoryMmap, what: &'static str, addr: u64, v: u64) -> Result<(), BootError> {
    mem.write_obj(v, GuestAddress(addr))
        .map_err(|source| BootError::GuestWrite { what, addr, source })
}

/// Writes the GDT at `GDT_ADDR` and an empty IDT at `IDT_ADDR`.
pub fn write_gdt_and_idt(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    for (i, e) in GDT.iter().enumerate() {
        write(mem, "GDT", GDT_ADDR + i as u64 * 8, *e)?;
    }
    write(mem, "IDT", IDT_ADDR, 0)
}

/// Identity-maps the first GiB with 2 MiB pages: PML4[0] → PDPT[0] → 512 PD entries.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    write(mem, "PML4", PML4_ADDR, PDPT_ADDR | 0x03)?;
    write(mem, "PDPT", PDPT_ADDR, PD_ADDR | 0x03)?;
    for i in 0..512u64 {
        write(mem, "PD", PD_ADDR + i * 8, (i << 21) | 0x83)?;
    }
    Ok(())
}

/// General registers for the 64-bit entry.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_ADDR,
        ..Default::default()
    }
}

/// Fills segment, descriptor-table and control registers for long mode.
pub fn boot_sregs(sregs: &mut kvm_sregs) {
    let code = segment_from_gdt(GDT[1], CODE_SEL / 8);
    let data = segment_from_gdt(GDT[2], DATA_SEL / 8);
    let tss = segment_from_gdt(GDT[3], TSS_SEL / 8);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
}

/// x87 control word and MXCSR defaults.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// The boot MSRs (values the kernel expects at entry).
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        // MTRRs enabled, default type write-back.
        e(MSR_MTRR_DEF_TYPE, (1 << 11) | 6),
    ]
}

/// Adjusts the host-supported CPUID for vCPU `id` of `count`: APIC IDs, logical processor
/// count, hypervisor bit.
pub fn filter_cpuid(cpuid: &mut CpuId, id: u8, count: u8) {
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                if count > 1 {
                    e.edx |= 1 << 28; // HTT: the count field is valid
                }
                e.ecx |= 1 << 31; // running under a hypervisor
            }
            0xb | 0x1f => e.edx = u32::from(id),
            _ => {}
        }
    }
}

/// Advertises the TSC-deadline timer (CPUID.1:ECX[24]) when KVM emulates it.
pub fn set_tsc_deadline(cpuid: &mut CpuId, available: bool) {
    if !available {
        return;
    }
    for e in cpuid.as_mut_slice().iter_mut() {
        if e.function == 1 {
            e.ecx |= 1 << 24;
        }
    }
}

fn lapic_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b = |i: usize| l.regs[off + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, byte) in v.to_le_bytes().iter().enumerate() {
        l.regs[off + i] = *byte as _;
    }
}

/// LINT0 as ExtINT (the PIC), LINT1 as NMI, like a PC firmware leaves them.
pub fn set_lint(l: &mut kvm_lapic_state) {
    let mode = |reg: u32, m: u32| (reg & !0x700) | (m << 8);
    let v0 = lapic_reg(l, APIC_LVT0);
    set_lapic_reg(l, APIC_LVT0, mode(v0, APIC_MODE_EXTINT));
    let v1 = lapic_reg(l, APIC_LVT1);
    set_lapic_reg(l, APIC_LVT1, mode(v1, APIC_MODE_NMI));
}

/// Errors setting vCPU state through KVM.
#[derive(Debug, thiserror::Error)]
#[error("vCPU {id}: cannot set {what}")]
pub struct VcpuSetupError {
    pub id: u8,
    pub what: &'static str,
    #[source]
    pub source: kvm_ioctls::Error,
}

/// A vCPU for firmware boot: CPUID and the LAPIC's LINT pins, registers left in KVM's
/// reset state (the BSP starts at the reset vector, the others wait for INIT and SIPI).
pub fn configure_reset_vcpu(
    vcpu: &VcpuFd,
    id: u8,
    count: u8,
    supported_cpuid: &CpuId,
) -> Result<(), VcpuSetupError> {
    let err = |what| move |source| VcpuSetupError { id, what, source };
    let mut cpuid = supported_cpuid.clone();
    filter_cpuid(&mut cpuid, id, count);
    vcpu.set_cpuid2(&cpuid).map_err(err("CPUID"))?;
    let mut lapic = vcpu.get_lapic().map_err(err("LAPIC"))?;
    set_lint(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(err("LAPIC"))?;
    Ok(())
}

/// Sets CPUID, MSRs, registers, FPU and LAPIC of vCPU `id` for the 64-bit boot.
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    id: u8,
    count: u8,
    supported_cpuid: &CpuId,
    entry: u64,
) -> Result<(), VcpuSetupError> {
    let err = |what| move |source| VcpuSetupError { id, what, source };
    configure_reset_vcpu(vcpu, id, count, supported_cpuid)?;
    let msrs = Msrs::from_entries(&boot_msr_entries()).map_err(|_| VcpuSetupError {
        id,
        what: "MSRs",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    let n = vcpu.set_msrs(&msrs).map_err(err("MSRs"))?;
    if n != msrs.as_slice().len() {
        tracing::warn!(
            vcpu = id,
            set = n,
            wanted = msrs.as_slice().len(),
            "not all boot MSRs accepted"
        );
    }
    vcpu.set_regs(&boot_regs(entry)).map_err(err("registers"))?;
    let mut sregs = vcpu.get_sregs().map_err(err("special registers"))?;
    boot_sregs(&mut sregs);
    vcpu.set_sregs(&sregs).map_err(err("special registers"))?;
    vcpu.set_fpu(&boot_fpu()).map_err(err("FPU"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::memory::create_guest_memory;
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn gdt_entries_match_known_encodings() {
        assert_eq!(GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(GDT[3], 0x008f_8b00_0000_ffff);
        let cs = segment_from_gdt(GDT[1], 1);
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(cs.selector, 8);
        assert_eq!(cs.limit, 0xffff_ffff);
        let tr = segment_from_gdt(GDT[3], 3);
        assert_eq!((tr.s, tr.type_, tr.selector), (0, 0xb, 0x18));
    }

    #[test]
    fn page_tables_identity_map_first_gib() {
        let m = create_guest_memory(32).unwrap();
        write_page_tables(&m).unwrap();
        write_gdt_and_idt(&m).unwrap();
        let r = |a: u64| m.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(r(PML4_ADDR), PDPT_ADDR | 3);
        assert_eq!(r(PDPT_ADDR), PD_ADDR | 3);
        assert_eq!(r(PD_ADDR), 0x83);
        assert_eq!(r(PD_ADDR + 8), (1 << 21) | 0x83);
        assert_eq!(r(PD_ADDR + 511 * 8), (511 << 21) | 0x83);
        assert_eq!(r(GDT_ADDR + 8), GDT[1]);
        assert_eq!(r(IDT_ADDR), 0);
    }

    #[test]
    fn regs_and_sregs_for_long_mode() {
        let r = boot_regs(0x100_0200);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x100_0200, ZERO_PAGE_ADDR, BOOT_STACK_POINTER, 2)
        );
        let mut s = kvm_sregs::default();
        boot_sregs(&mut s);
        assert_eq!(s.cr3, PML4_ADDR);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cs.selector, CODE_SEL);
        assert_eq!(s.gdt.limit, 31);
        assert_eq!(boot_fpu().fcw, 0x37f);
    }

    #[test]
    fn tsc_deadline_is_advertised_only_when_available() {
        let mut c = CpuId::from_entries(&[kvm_bindings::kvm_cpuid_entry2 {
            function: 1,
            ..Default::default()
        }])
        .unwrap();
        set_tsc_deadline(&mut c, false);
        assert_eq!(c.as_slice()[0].ecx & (1 << 24), 0);
        set_tsc_deadline(&mut c, true);
        assert_ne!(c.as_slice()[0].ecx & (1 << 24), 0);
    }

    #[test]
    fn cpuid_gets_apic_ids() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xdead_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                ..Default::default()
            },
        ];
        let mut c = CpuId::from_entries(&entries).unwrap();
        filter_cpuid(&mut c, 3, 4);
        let s = c.as_slice();
        assert_eq!(s[0].ebx, 0x0304_0800);
        assert_ne!(s[0].edx & (1 << 28), 0);
        assert_ne!(s[0].ecx & (1 << 31), 0);
        assert_eq!(s[1].edx, 3);
    }

    #[test]
    fn lint_pins_set() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT0, 0x0001_0000);
        set_lint(&mut l);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&l, APIC_LVT1), 0x400);
    }

    #[test]
    fn msr_list_has_misc_enable() {
        let m = boot_msr_entries();
        assert!(m
            .iter()
            .any(|e| e.index == MSR_IA32_MISC_ENABLE && e.data == 1));
    }
}
