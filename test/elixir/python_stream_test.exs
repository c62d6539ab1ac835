defmodule PythonStreamTest do
  use ExUnit.Case, async: false

  describe "stream_start/4" do
    test "values as messages, acknowledged, then :done" do
      {:ok, ref} = Python.stream_start(:builtins, :range, [3])
      assert is_reference(ref)

      values =
        for _ <- 1..3 do
          receive do
            {:py_stream, ^ref, {:data, v}} ->
              :ok = Python.stream_ack(ref)
              v
          after
            5000 -> flunk("no value")
          end
        end

      assert values == [0, 1, 2]
      assert_receive {:py_stream, ^ref, :done}, 5000
    end

    test "the window bounds the mailbox; cancel stops it" do
      {:ok, ref} = Python.stream_start(:itertools, :count, [], window: 5)
      for _ <- 1..5, do: assert_receive({:py_stream, ^ref, {:data, _}}, 5000)
      refute_receive {:py_stream, ^ref, _}, 200
      assert Python.stream_cancel(ref) == :ok
    end

    test "errors and bad options" do
      {:ok, ref} = Python.stream_start(:builtins, :iter, [42])
      assert_receive {:py_stream, ^ref, {:error, {:TypeError, _}}}, 5000

      assert {:error, %Python.Error{reason: {:badarg, :window}}} =
               Python.stream_start(:builtins, :range, [3], window: 0)

      assert_raise ArgumentError, fn -> Python.stream_start(:builtins, :range, [3], nope: 1) end
    end

    test "kwargs: and context:" do
      {:ok, ctx} = Python.Context.new()

      :ok =
        Python.Context.exec(
          ctx,
          "def pairs(n, tag='p'):\n    for i in range(n):\n        yield (tag, i)"
        )

      {:ok, ref} =
        Python.stream_start(:__main__, :pairs, [2],
          context: ctx,
          kwargs: [tag: "q"],
          window: :infinity
        )

      assert_receive {:py_stream, ^ref, {:data, {"q", 0}}}, 5000
      assert_receive {:py_stream, ^ref, {:data, {"q", 1}}}, 5000
      assert_receive {:py_stream, ^ref, :done}, 5000
      :ok = Python.Context.release(ctx)
    end
  end

  describe "lazy_stream/4" do
    test "an Elixir Stream; halting early cancels the generator" do
      assert Python.lazy_stream(:itertools, :count, [10]) |> Enum.take(3) == [10, 11, 12]
      assert Python.lazy_stream(:builtins, :range, [4]) |> Enum.map(&(&1 * 2)) == [0, 2, 4, 6]
      refute_receive {:py_stream, _, _}, 100
    end

    test "a Python error raises Python.Error" do
      assert_raise Python.Error, ~r/TypeError/, fn ->
        Python.lazy_stream(:builtins, :iter, [42]) |> Enum.to_list()
      end
    end
  end

  describe "Python.Channel" do
    test "terms into a running Python call" do
      {:ok, ch} = Python.Channel.new(max_size: 2)
      assert Python.Channel.send(ch, 1) == :ok
      assert Python.Channel.send(ch, 2) == :ok
      assert Python.Channel.send(ch, 3) == {:error, :full}
      :ok = Python.Channel.close(ch)
      assert Python.Channel.send(ch, 4) == {:error, :closed}
      assert Python.eval("list(ch)", %{ch: ch}) == {:ok, [1, 2]}
      assert %{sent: 2, received: 2, closed: true} = Python.Channel.info(ch)
    end

    test "a byte channel is a file for json.load" do
      {:ok, ch} = Python.Channel.new(type: :bytes)

      spawn(fn ->
        Enum.each(["{\"a\": ", "[1, 2]}"], &Python.Channel.send(ch, &1))
        Python.Channel.close(ch)
      end)

      assert Python.eval("__import__('json').load(ch)", %{ch: ch}) == {:ok, %{"a" => [1, 2]}}
    end

    test "bad options raise" do
      assert_raise ArgumentError, fn -> Python.Channel.new(type: :text) end
    end
  end
end
