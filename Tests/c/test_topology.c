/*
 * test_topology.c — instance types in VTRN_TOPOLOGY and the NeuronLinks of the devices through the
 * C ABI: vtrn_device_get_links against the driver's 4x4 torus table, the rings of device lists,
 * the interconnect fields of vtrn_device_info_t, the instance type in vtrn_runtime_info_t, and the
 * errors for bad instance topologies and bad arguments.
 *
 *   make -C Tests/c check          (or: make -C Tests/c build/test_topology && Tests/c/build/test_topology)
 *
 * The program ends with the line "test_topology: N passed, M failed". Set VTRN_TEST_VERBOSE=1 to
 * print each group's name. No core is claimed: the devices may be shared with other programs.
 */
#define _GNU_SOURCE

#include "test_framework.h"

/* The driver's table (aws-neuron-driver v2/neuron_dhal_v2.c, trn1_32xl_neigbor_ids), verbatim. */
static const uint32_t driver_torus[16][4] = {
    { 12, 3, 4, 1 }, { 13, 0, 5, 2 },  { 14, 1, 6, 3 },  { 15, 2, 7, 0 },  { 0, 7, 8, 5 },   { 1, 4, 9, 6 },
    { 2, 5, 10, 7 }, { 3, 6, 11, 4 },  { 4, 11, 12, 9 }, { 5, 8, 13, 10 }, { 6, 9, 14, 11 }, { 7, 10, 15, 8 },
    { 8, 15, 0, 13 }, { 9, 12, 1, 14 }, { 10, 13, 2, 15 }, { 11, 14, 3, 12 },
};

static const char *const variables[] = {
    "VTRN_TOPOLOGY", "VTRN_VISIBLE_CORES", "VTRN_LOG_LEVEL", "VTRN_EXEC_TIMEOUT_MS", "VTRN_TRACE", "VTRN_FAULTS",
};

static vtrn_runtime_t create_runtime(const char *topology) {
    vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
    options.topology = topology;
    vtrn_runtime_t runtime = NULL;
    vtrn_status_t status = vtrn_runtime_create(&options, &runtime);
    record(status == VTRN_SUCCESS && runtime != NULL, __FILE__, __LINE__,
           "vtrn_runtime_create(topology \"%s\") returned %s: %s", topology, vtrn_status_string(status),
           vtrn_last_error());
    return status == VTRN_SUCCESS ? runtime : NULL;
}

/* The links of `device` into `links` (capacity 8); returns their count, recording a failure. */
static uint32_t links_of(vtrn_device_t device, uint32_t links[8]) {
    uint32_t count = 8;
    EXPECT_OK(vtrn_device_get_links(device, links, &count));
    return count;
}

static void test_instances(void) {
    GROUP("16-device instances are the driver's torus");
    const char *const names[] = { "trn1.32xlarge", "trn1n.32xlarge", "trn2.48xlarge", "trn2u.48xlarge" };
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        vtrn_runtime_t runtime = create_runtime(names[n]);
        if (runtime == NULL) continue;
        vtrn_runtime_info_t info = VTRN_RUNTIME_INFO_INIT;
        EXPECT_OK(vtrn_runtime_get_info(runtime, &info));
        EXPECT_STREQ(info.topology, names[n]);
        EXPECT_STREQ(info.instance_type, names[n]);
        EXPECT_EQ_U64(info.device_count, 16);
        for (uint32_t d = 0; d < 16; d++) {
            vtrn_device_t device = get_device(runtime, d);
            uint32_t links[8] = { 0 };
            uint32_t count = links_of(device, links);
            EXPECT_EQ_U64(count, 4);
            EXPECT_MSG(memcmp(links, driver_torus[d], sizeof driver_torus[d]) == 0,
                       "%s device %u: links %u, %u, %u, %u, expected %u, %u, %u, %u", names[n], d, links[0], links[1],
                       links[2], links[3], driver_torus[d][0], driver_torus[d][1], driver_torus[d][2],
                       driver_torus[d][3]);
            EXPECT_EQ_U64(get_device_info(device).link_count, 4);
        }
        EXPECT_OK(vtrn_runtime_destroy(runtime));
    }
}

static void test_interconnect_fields(void) {
    GROUP("interconnect fields of vtrn_device_info_t");
    const uint64_t gib = 1ull << 30;
    struct {
        const char *topology;
        const char *name;
        uint64_t link, device;
    } cases[] = {
        { "trn1.32xlarge", "NeuronLink-v2", 96 * gib, 384 * gib },
        { "trn1n.32xlarge", "NeuronLink-v2", 192 * gib, 768 * gib },
        { "trn2.48xlarge", "NeuronLink-v3", 256000000000ull, 1024000000000ull },
        { "trn1:3", "NeuronLink-v2", 96 * gib, 384 * gib },
        { "trn2", "NeuronLink-v3", 256000000000ull, 1024000000000ull },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vtrn_runtime_t runtime = create_runtime(cases[i].topology);
        if (runtime == NULL) continue;
        vtrn_device_info_t info = get_device_info(get_device(runtime, 0));
        EXPECT_STREQ(info.interconnect, cases[i].name);
        EXPECT_EQ_U64(info.links_per_device, 4);
        EXPECT_EQ_U64(info.link_bandwidth, cases[i].link);
        EXPECT_EQ_U64(info.device_link_bandwidth, cases[i].device);
        EXPECT_EQ_U64(info.hop_latency_ns, 1500);
        EXPECT_OK(vtrn_runtime_destroy(runtime));
    }
}

static void test_device_lists(void) {
    GROUP("device lists are rings per architecture; trn1.2xlarge has no link");
    vtrn_runtime_t runtime = create_runtime("trn1.2xlarge");
    if (runtime != NULL) {
        uint32_t links[8];
        EXPECT_EQ_U64(links_of(get_device(runtime, 0), links), 0);
        EXPECT_EQ_U64(get_device_info(get_device(runtime, 0)).link_count, 0);
        vtrn_runtime_info_t info = VTRN_RUNTIME_INFO_INIT;
        EXPECT_OK(vtrn_runtime_get_info(runtime, &info));
        EXPECT_STREQ(info.instance_type, "trn1.2xlarge");
        EXPECT_EQ_U64(info.device_count, 1);
        EXPECT_OK(vtrn_runtime_destroy(runtime));
    }

    runtime = create_runtime("trn1:4");
    if (runtime != NULL) {
        const uint32_t expected[4][2] = { { 3, 1 }, { 0, 2 }, { 1, 3 }, { 2, 0 } };
        for (uint32_t d = 0; d < 4; d++) {
            uint32_t links[8];
            EXPECT_EQ_U64(links_of(get_device(runtime, d), links), 2);
            EXPECT_MSG(links[0] == expected[d][0] && links[1] == expected[d][1], "trn1:4 device %u: %u, %u", d,
                       links[0], links[1]);
        }
        vtrn_runtime_info_t info = VTRN_RUNTIME_INFO_INIT;
        EXPECT_OK(vtrn_runtime_get_info(runtime, &info));
        EXPECT_STREQ(info.instance_type, "");
        EXPECT_OK(vtrn_runtime_destroy(runtime));
    }

    runtime = create_runtime("trn2:2");
    if (runtime != NULL) {
        uint32_t links[8];
        EXPECT_EQ_U64(links_of(get_device(runtime, 0), links), 1);
        EXPECT_EQ_U64(links[0], 1);
        EXPECT_EQ_U64(links_of(get_device(runtime, 1), links), 1);
        EXPECT_EQ_U64(links[0], 0);
        EXPECT_OK(vtrn_runtime_destroy(runtime));
    }

    /* Mixed: trn1 devices 0, 2 and 3 are a ring; the trn2 (device 1) is alone. */
    runtime = create_runtime("trn1,trn2,trn1:2");
    if (runtime != NULL) {
        uint32_t links[8];
        EXPECT_EQ_U64(links_of(get_device(runtime, 0), links), 2);
        EXPECT(links[0] == 3 && links[1] == 2);
        EXPECT_EQ_U64(links_of(get_device(runtime, 1), links), 0);
        EXPECT_EQ_U64(links_of(get_device(runtime, 2), links), 2);
        EXPECT(links[0] == 0 && links[1] == 3);
        EXPECT_OK(vtrn_runtime_destroy(runtime));
    }
}

static void test_arguments(void) {
    GROUP("vtrn_device_get_links arguments");
    vtrn_runtime_t runtime = create_runtime("trn2.48xlarge");
    if (runtime == NULL) return;
    vtrn_device_t device = get_device(runtime, 5);

    /* NULL devices: the count only. */
    uint32_t count = 0;
    EXPECT_OK(vtrn_device_get_links(device, NULL, &count));
    EXPECT_EQ_U64(count, 4);

    /* Too small: an error that says what is needed, count set to it, the array untouched. */
    uint32_t links[4] = { 77, 77, 77, 77 };
    count = 3;
    EXPECT_ERROR(vtrn_device_get_links(device, links, &count), VTRN_ERROR_INVALID_ARGUMENT,
                 "vtrn_device_get_links: *count is 3, but device 5 has 4 links; pass an array of 4 (count now holds it)");
    EXPECT_EQ_U64(count, 4);
    EXPECT(links[0] == 77 && links[1] == 77 && links[2] == 77 && links[3] == 77);
    count = 0;
    EXPECT_ERROR(vtrn_device_get_links(device, links, &count), VTRN_ERROR_INVALID_ARGUMENT, "*count is 0");

    /* Exactly enough, and more than enough (count becomes the number written). */
    count = 4;
    EXPECT_OK(vtrn_device_get_links(device, links, &count));
    EXPECT(count == 4 && links[0] == 1 && links[1] == 4 && links[2] == 9 && links[3] == 6);
    uint32_t more[6] = { 77, 77, 77, 77, 77, 77 };
    count = 6;
    EXPECT_OK(vtrn_device_get_links(device, more, &count));
    EXPECT(count == 4 && more[3] == 6 && more[4] == 77 && more[5] == 77);

    EXPECT_ERROR(vtrn_device_get_links(device, links, NULL), VTRN_ERROR_INVALID_ARGUMENT,
                 "vtrn_device_get_links: count is NULL");
    EXPECT_ERROR(vtrn_device_get_links(NULL, links, &count), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_get_links");
    EXPECT_OK(vtrn_runtime_destroy(runtime));
    count = 4;
    EXPECT_ERROR(vtrn_device_get_links(device, links, &count), VTRN_ERROR_INVALID_HANDLE, "vtrn_device_get_links");
}

static void test_bad_topologies(void) {
    GROUP("bad instance topologies");
    struct {
        const char *topology;
        const char *problem;
    } cases[] = {
        { "trn3.48xlarge", "names instance type \"trn3.48xlarge\", which vtrn does not model (it models trn1.2xlarge, "
                           "trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge or trn2u.48xlarge)" },
        { "trn1.32xlarge:2", "gives instance type trn1.32xlarge a count (\":2\"): an instance has 16 devices" },
        { "trn1.32xlarge,trn1", "is instance type trn1.32xlarge, which stands alone" },
        { "trn1,trn2.48xlarge", "entry 2 (\"trn2.48xlarge\") is instance type trn2.48xlarge, which stands alone" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vtrn_runtime_options_t options = VTRN_RUNTIME_OPTIONS_INIT;
        options.topology = cases[i].topology;
        vtrn_runtime_t runtime = NULL;
        EXPECT_ERROR(vtrn_runtime_create(&options, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "options.topology=",
                     cases[i].topology, cases[i].problem, "or one instance type alone, INSTANCE[@nodeN]");
        EXPECT(runtime == NULL);
        /* The same from the environment names the variable. */
        setenv("VTRN_TOPOLOGY", cases[i].topology, 1);
        EXPECT_ERROR(vtrn_runtime_create(NULL, &runtime), VTRN_ERROR_INVALID_ARGUMENT, "VTRN_TOPOLOGY=",
                     cases[i].problem);
        unsetenv("VTRN_TOPOLOGY");
        EXPECT(runtime == NULL);
    }
}

int main(void) {
    verbose = getenv("VTRN_TEST_VERBOSE") != NULL;
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) unsetenv(variables[i]);

    test_instances();
    test_interconnect_fields();
    test_device_lists();
    test_arguments();
    test_bad_topologies();

    return finish("test_topology");
}
