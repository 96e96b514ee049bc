/** JMH benchmarks and the kernel lab (not shipped). */
package dev.crucible.bench;
