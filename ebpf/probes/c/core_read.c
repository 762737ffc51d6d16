// Where the fields the socket programs walk sit in the running kernel's structures, as CO-RE
// relocations: rustc cannot emit LLVM's preserve_access_index, so these few accessors are C,
// compiled to bitcode by clang and linked into the Rust programs by bpf-linker; the loader
// (aya) rewrites each returned constant against the running kernel's BTF.
//
// The structures declare only the fields read, with the kernel's names: CO-RE matches fields
// by name (looking inside anonymous members, where sock_common keeps its addresses), never by
// position, so the layout below is not the kernel's and need not be.

#define OFFSET(type, field) \
    ((unsigned int)__builtin_preserve_field_info(((type *)0)->field, 0 /* BYTE_OFFSET */))
#define SIZE(type, field) \
    ((unsigned int)__builtin_preserve_field_info(((type *)0)->field, 1 /* BYTE_SIZE */))

struct files_struct;
struct fdtable;
struct inode;
struct sock;

struct task_struct {
    struct files_struct *files;
} __attribute__((preserve_access_index));

struct files_struct {
    struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct fdtable {
    unsigned int max_fds;
    struct file **fd;
} __attribute__((preserve_access_index));

struct file {
    struct inode *f_inode;
    void *private_data;
} __attribute__((preserve_access_index));

struct inode {
    unsigned short i_mode;
} __attribute__((preserve_access_index));

struct socket {
    struct sock *sk;
} __attribute__((preserve_access_index));

struct in6_addr {
    unsigned char s6_addr[16];
} __attribute__((preserve_access_index));

struct sock_common {
    unsigned short skc_family;
    unsigned int skc_daddr;
    unsigned int skc_rcv_saddr;
    unsigned short skc_dport;
    unsigned short skc_num;
    struct in6_addr skc_v6_daddr;
    struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
    struct sock_common __sk_common;
    unsigned short sk_type;
    unsigned short sk_protocol;
} __attribute__((preserve_access_index));

// One accessor per field, each a constant the loader relocates; always inlined into the
// Rust callers (bpf-linker links the bitcode of both), so each offset is an immediate.
#define ACCESSOR(name, type, field)                                                        \
    __attribute__((always_inline)) unsigned int spanhook_core_##name(void)                \
    {                                                                                      \
        return OFFSET(type, field);                                                        \
    }

ACCESSOR(task_files, struct task_struct, files)
ACCESSOR(files_fdt, struct files_struct, fdt)
ACCESSOR(fdtable_max_fds, struct fdtable, max_fds)
ACCESSOR(fdtable_fd, struct fdtable, fd)
ACCESSOR(file_inode, struct file, f_inode)
ACCESSOR(file_private_data, struct file, private_data)
ACCESSOR(inode_mode, struct inode, i_mode)
ACCESSOR(socket_sk, struct socket, sk)
ACCESSOR(sock_type, struct sock, sk_type)
ACCESSOR(sock_protocol, struct sock, sk_protocol)
ACCESSOR(skc_family, struct sock, __sk_common.skc_family)
ACCESSOR(skc_daddr, struct sock, __sk_common.skc_daddr)
ACCESSOR(skc_rcv_saddr, struct sock, __sk_common.skc_rcv_saddr)
ACCESSOR(skc_dport, struct sock, __sk_common.skc_dport)
ACCESSOR(skc_num, struct sock, __sk_common.skc_num)
ACCESSOR(skc_v6_daddr, struct sock, __sk_common.skc_v6_daddr)
ACCESSOR(skc_v6_rcv_saddr, struct sock, __sk_common.skc_v6_rcv_saddr)

// 1 when every field has the size the reads assume (a pointer, u32, u16, 16 address bytes),
// else 0, so that the programs read nothing rather than the wrong bytes.
__attribute__((always_inline)) unsigned int spanhook_core_sizes_ok(void)
{
    return SIZE(struct task_struct, files) == 8 && SIZE(struct files_struct, fdt) == 8
        && SIZE(struct fdtable, max_fds) == 4 && SIZE(struct fdtable, fd) == 8
        && SIZE(struct file, f_inode) == 8 && SIZE(struct file, private_data) == 8
        && SIZE(struct inode, i_mode) == 2 && SIZE(struct socket, sk) == 8
        && SIZE(struct sock, sk_type) == 2 && SIZE(struct sock, sk_protocol) == 2
        && SIZE(struct sock, __sk_common.skc_family) == 2
        && SIZE(struct sock, __sk_common.skc_daddr) == 4
        && SIZE(struct sock, __sk_common.skc_rcv_saddr) == 4
        && SIZE(struct sock, __sk_common.skc_dport) == 2
        && SIZE(struct sock, __sk_common.skc_num) == 2
        && SIZE(struct sock, __sk_common.skc_v6_daddr) == 16
        && SIZE(struct sock, __sk_common.skc_v6_rcv_saddr) == 16;
}
