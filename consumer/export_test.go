package consumer

import "github.com/segmentio/kafka-go"

// PartitionReader is what the consumer uses of a partition's reader.
type PartitionReader = partitionReader

// WrapReaders makes c open its partition readers through wrap, which is
// given the partition and the real opener. Call it before Run.
func (c *Consumer) WrapReaders(wrap func(tp TopicPartition, open func() (PartitionReader, error)) (PartitionReader, error)) {
	open := c.openReader
	c.openReader = func(rcfg kafka.ReaderConfig, offset int64) (partitionReader, error) {
		return wrap(TopicPartition{rcfg.Topic, rcfg.Partition}, func() (partitionReader, error) { return open(rcfg, offset) })
	}
}
